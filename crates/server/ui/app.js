// The Switchyard dashboard: plain browser JavaScript over the server's own API
// (KFP v2beta1 plus /apis/switchyard/v1), no build step, nothing from the
// internet. Pages are hash routes: #/runs, #/runs/ID, #/pipelines,
// #/pipelines/ID, #/experiments, #/experiments/ID, #/schedules, #/schedules/ID,
// #/new-run?pipeline=ID&version=VID, #/jobs, #/jobs/ID, #/kpis (and the
// #/KIND/details/ID links kfp.Client prints).
(function () {
  'use strict';

  const FINAL = new Set(['SUCCEEDED', 'FAILED', 'CANCELED', 'SKIPPED']);
  const STATES = ['PENDING', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELING', 'CANCELED'];
  const main = document.getElementById('main');
  let page = { stop: [] };

  // ------------------------------------------------------------ utilities

  /** Builds an element: h('a', {href: '#/x', class: 'y', onclick: f}, 'text', child, [children]). */
  function h(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else if (k === 'text') e.textContent = v;
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c === undefined || c === null || c === false) continue;
      add(e, c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  const norm = (children) => children.flat(Infinity)
    .filter((c) => c !== undefined && c !== null && c !== false)
    .map((c) => (c instanceof Node ? c : document.createTextNode(String(c))));
  /** Replaces an element's children (arrays flattened, null and false skipped). */
  const set = (e, ...children) => e.replaceChildren(...norm(children));
  /** Appends children the same way. */
  const add = (e, ...children) => e.append(...norm(children));

  const badge = (state) => h('span', { class: 'state state-' + state }, state || 'UNKNOWN');

  function fmtTime(t) {
    if (!t) return '';
    const d = new Date(t);
    return isNaN(d) ? String(t) : d.toLocaleString();
  }

  function fmtDuration(start, end) {
    if (!start) return '';
    const ms = (end ? new Date(end) : new Date()) - new Date(start);
    if (!(ms >= 0)) return '';
    const s = ms / 1000;
    if (s < 60) return s.toFixed(1) + ' s';
    if (s < 3600) return Math.floor(s / 60) + ' min ' + Math.round(s % 60) + ' s';
    return Math.floor(s / 3600) + ' h ' + Math.round((s % 3600) / 60) + ' min';
  }

  const show = (v) => (typeof v === 'string' ? v : JSON.stringify(v));

  function onStop(f) {
    page.stop.push(f);
  }

  function every(ms, f) {
    let alive = true;
    let timer = null;
    const tick = async () => {
      if (!alive) return;
      let again = true;
      try {
        again = (await f()) !== false;
      } catch (e) {
        console.warn(e);
      }
      if (alive && again) timer = setTimeout(tick, ms);
    };
    onStop(() => {
      alive = false;
      clearTimeout(timer);
    });
    tick();
  }

  // ------------------------------------------------------------ the API

  const token = () => sessionStorage.getItem('switchyard-token') || '';
  // The start line's link carries the token in the fragment (never sent to a
  // server, never in a log): keep it for this tab and drop it from the address.
  if (location.hash.startsWith('#token=')) {
    sessionStorage.setItem('switchyard-token', decodeURIComponent(location.hash.slice(7)));
    history.replaceState(null, '', location.pathname + '#/runs');
  }

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function login() {
    const dialog = document.getElementById('login');
    if (dialog.open) return;
    document.getElementById('login-error').textContent = token() ? 'That token was refused.' : '';
    dialog.showModal();
  }

  document.getElementById('login-form').addEventListener('submit', () => {
    sessionStorage.setItem('switchyard-token', document.getElementById('login-token').value.trim());
    route();
  });

  async function request(path, opts) {
    const o = Object.assign({}, opts || {});
    o.headers = Object.assign({}, o.headers || {});
    if (token()) o.headers.Authorization = 'Bearer ' + token();
    const res = await fetch(path, o);
    if (res.status === 401) {
      login();
      throw new ApiError(401, 'This server needs its API token: sign in.');
    }
    if (!res.ok) {
      let message = res.statusText;
      try {
        const body = await res.json();
        message = body.message || body.error || message;
      } catch (e) { /* not JSON */ }
      throw new ApiError(res.status, message);
    }
    return res;
  }

  const api = async (path, opts) => (await request(path, opts)).json();
  const post = (path, body) =>
    api(path, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body || {}) });

  /** Streams a text response into `onText` chunks until it ends or the page changes. */
  async function stream(path, onText) {
    const ctl = new AbortController();
    onStop(() => ctl.abort());
    const res = await request(path, { signal: ctl.signal });
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      onText(dec.decode(value, { stream: true }));
    }
  }

  /** Saves what `path` returns as a file, with the token the link could not carry. */
  async function download(path, name) {
    const blob = await (await request(path)).blob();
    const url = URL.createObjectURL(blob);
    const a = h('a', { href: url, download: name });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  function errorBox(e) {
    return h('div', { class: 'error-box', role: 'alert' }, e instanceof Error ? e.message : String(e));
  }

  // ------------------------------------------------------------ routing

  function route() {
    for (const f of page.stop) f();
    page = { stop: [] };
    const hash = location.hash.replace(/^#/, '') || '/runs';
    const [path, query] = hash.split('?');
    const params = new URLSearchParams(query || '');
    const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
    // The links kfp.Client prints (KFP's own dashboard routes):
    // #/runs/details/ID, #/experiments/details/ID, #/pipelines/details/ID/version/VID.
    if (parts[1] === 'details') parts.splice(1, 1);
    for (const a of document.querySelectorAll('nav a')) {
      a.classList.toggle('active', a.dataset.nav === (parts[0] === 'new-run' ? 'pipelines' : parts[0]));
    }
    set(main, h('p', { class: 'muted' }, 'Loading…'));
    const pages = {
      runs: () => (parts[1] ? runPage(parts[1]) : runsPage(params)),
      pipelines: () => (parts[1] ? pipelinePage(parts[1], parts[2] === 'version' ? parts[3] : null) : pipelinesPage()),
      experiments: () => (parts[1] ? experimentPage(parts[1]) : experimentsPage(params)),
      schedules: () => (parts[1] ? schedulePage(parts[1]) : schedulesPage()),
      // KFP's dashboard route for a recurring run.
      recurringrun: () => schedulePage(parts[1]),
      'new-run': () => newRunPage(params),
      jobs: () => (parts[1] ? jobPage(parts[1]) : jobsPage()),
      kpis: () => kpiPage(params),
    };
    const render = pages[parts[0]] || (() => { location.hash = '#/runs'; });
    Promise.resolve(render()).catch((e) => set(main, errorBox(e)));
  }
  window.addEventListener('hashchange', route);

  // ------------------------------------------------------------ runs

  async function runsPage(params) {
    const state = params.get('state') || '';
    const q = params.get('q') || '';
    const exp = params.get('experiment') || '';
    const archived = params.get('archived') === '1';
    const tokens = (params.get('pages') || '').split(',').filter(Boolean);
    const experiments = (await api('/apis/v2beta1/experiments?page_size=1000')).experiments || [];
    const expName = Object.fromEntries(experiments.map((e) => [e.experiment_id, e.display_name]));
    const predicates = [{ key: 'storage_state', operation: 'EQUALS', string_value: archived ? 'ARCHIVED' : 'AVAILABLE' }];
    if (state) predicates.push({ key: 'state', operation: 'EQUALS', string_value: state });
    if (q) predicates.push({ key: 'display_name', operation: 'IS_SUBSTRING', string_value: q });
    const qs = new URLSearchParams({ page_size: '20', sort_by: 'created_at desc', filter: JSON.stringify({ predicates }) });
    if (exp) qs.set('experiment_id', exp);
    if (tokens.length) qs.set('page_token', tokens[tokens.length - 1]);
    const list = await api('/apis/v2beta1/runs?' + qs);
    const runs = list.runs || [];

    const go = (changes) => {
      const p = new URLSearchParams({ state, q, experiment: exp, archived: archived ? '1' : '', pages: tokens.join(',') });
      for (const [k, v] of Object.entries(changes)) p.set(k, v);
      if (!('pages' in changes)) p.set('pages', '');
      for (const [k, v] of [...p.entries()]) if (!v) p.delete(k);
      location.hash = '#/runs?' + p;
    };
    const search = h('input', { id: 'runs-q', type: 'search', value: q, placeholder: 'name contains…' });
    const form = h('form', { class: 'toolbar', onsubmit: (e) => { e.preventDefault(); go({ q: search.value.trim() }); } },
      h('div', { class: 'field' }, h('label', { for: 'runs-q' }, 'Name'), search),
      h('div', { class: 'field' }, h('label', { for: 'runs-state' }, 'State'),
        h('select', { id: 'runs-state', onchange: (e) => go({ state: e.target.value }) },
          h('option', { value: '' }, 'any'), STATES.map((s) => h('option', { value: s, selected: s === state }, s)))),
      h('div', { class: 'field' }, h('label', { for: 'runs-exp' }, 'Experiment'),
        h('select', { id: 'runs-exp', onchange: (e) => go({ experiment: e.target.value }) },
          h('option', { value: '' }, 'any'), experiments.map((x) => h('option', { value: x.experiment_id, selected: x.experiment_id === exp }, x.display_name)))),
      h('label', {}, h('input', { type: 'checkbox', checked: archived, onchange: (e) => go({ archived: e.target.checked ? '1' : '' }) }), ' archived'),
      h('button', { type: 'submit' }, 'Filter'));
    const rows = runs.map((r) => h('tr', { 'data-run': r.run_id },
      h('td', {}, h('a', { href: '#/runs/' + r.run_id }, r.display_name || r.run_id)),
      h('td', {}, badge(r.state)),
      h('td', { class: 'num' }, fmtDuration(r.created_at, r.finished_at)),
      h('td', { class: 'optional' }, expName[r.experiment_id] || ''),
      h('td', { class: 'optional' }, fmtTime(r.created_at))));
    set(main, 
      h('h1', {}, 'Runs'),
      form,
      h('div', { class: 'panel table-wrap' },
        runs.length
          ? h('table', { id: 'runs-table' },
            h('thead', {}, h('tr', {}, h('th', {}, 'Name'), h('th', {}, 'State'), h('th', {}, 'Duration'),
              h('th', { class: 'optional' }, 'Experiment'), h('th', { class: 'optional' }, 'Created'))),
            h('tbody', {}, rows))
          : h('p', { class: 'muted' }, 'No runs match. Start one from a pipeline.'),
        h('div', { class: 'pager' },
          h('button', { disabled: !tokens.length, onclick: () => go({ pages: tokens.slice(0, -1).join(',') }) }, '← Newer'),
          h('span', { class: 'muted' }, (list.total_size || 0) + ' runs'),
          h('button', { disabled: !list.next_page_token, onclick: () => go({ pages: [...tokens, list.next_page_token].join(',') }) }, 'Older →'))));
    // Live while anything on the page is still moving.
    if (runs.some((r) => !FINAL.has(r.state))) {
      const t = setTimeout(() => { if (location.hash.startsWith('#/runs') && !location.hash.startsWith('#/runs/')) route(); }, 2000);
      onStop(() => clearTimeout(t));
    }
  }

  async function runPage(id) {
    let selected = null;
    let detail = null;
    let exp;
    const title = h('h1', {});
    const actions = h('div', { class: 'actions' });
    const errors = h('div', {});
    const graph = h('div', { class: 'graph', id: 'graph', role: 'group', 'aria-label': 'Pipeline graph' });
    const panel = h('aside', { class: 'panel', id: 'task-panel', 'aria-live': 'polite' },
      h('p', { class: 'muted' }, 'Select a task to see its inputs, outputs, artifacts and log.'));
    const summary = h('dl', { class: 'kv' });
    set(main, title, actions, errors,
      h('div', { class: 'run-layout' },
        h('section', { class: 'panel' }, summary, h('h2', {}, 'Graph'), graph),
        panel));

    const act = (label, action, cls) => h('button', {
      class: cls, onclick: async (e) => {
        e.target.disabled = true;
        try {
          await post('/apis/v2beta1/runs/' + id + ':' + action);
          await refresh();
        } catch (err) {
          set(errors, errorBox(err));
        }
      },
    }, label);

    async function refresh() {
      detail = await api('/apis/switchyard/v1/runs/' + encodeURIComponent(id));
      const tasks = detail.tasks || [];
      set(title, detail.display_name || id, badge(detail.state));
      // A run's experiment does not change: asked for once, not on every refresh.
      if (exp === undefined) exp = detail.experiment_id ? await api('/apis/v2beta1/experiments/' + detail.experiment_id).catch(() => null) : null;
      set(summary, 
        h('dt', {}, 'Run'), h('dd', {}, h('code', {}, detail.run_id)),
        h('dt', {}, 'Pipeline'), h('dd', {}, (detail.pipeline_spec && detail.pipeline_spec.pipelineInfo || {}).name || ''),
        h('dt', {}, 'Experiment'), h('dd', {}, exp ? exp.display_name : ''),
        h('dt', {}, 'Created'), h('dd', {}, fmtTime(detail.created_at)),
        h('dt', {}, 'Duration'), h('dd', {}, fmtDuration(detail.scheduled_at || detail.created_at, detail.finished_at)),
        h('dt', {}, 'Parameters'), h('dd', {}, Object.entries(detail.parameters || {}).map(([k, v]) => h('div', {}, h('code', {}, k), ' = ', show(v)))),
        detail.outputs ? [h('dt', {}, 'Outputs'), h('dd', {}, h('code', {}, show(detail.outputs)))] : []);
      const running = !FINAL.has(detail.state);
      set(actions, 
        running ? act('Terminate', 'terminate', 'danger') : null,
        ['FAILED', 'CANCELED'].includes(detail.state) ? act('Retry', 'retry') : null,
        detail.storage_state === 'ARCHIVED' ? act('Restore', 'unarchive') : act('Archive', 'archive'));
      const failed = tasks.filter((t) => t.state === 'FAILED' && t.kind !== 'dag' && t.kind !== 'loop');
      set(errors, );
      if (detail.state === 'FAILED' || (detail.error && detail.error.message)) {
        add(errors, h('div', { class: 'error-box', role: 'alert', id: 'run-error' },
          h('strong', {}, 'The run failed'), detail.error ? ': ' + detail.error.message : '',
          failed.map((t) => h('div', { class: 'failing-task' }, 'Failing task: ', h('a', { href: '#', onclick: (e) => { e.preventDefault(); select(t.key); } }, t.key),
            t.error && !(detail.error && detail.error.message === t.error) ? ' — ' + t.error : ''))));
      }
      window.SwitchyardGraph.render(graph, detail.pipeline_spec || {}, tasks, { selected, onSelect: select });
      if (selected) renderPanel(false);
      return running;
    }

    function select(key) {
      selected = key;
      for (const n of graph.querySelectorAll('.node')) n.classList.toggle('selected', n.dataset.key === key);
      renderPanel(true);
    }

    let logKey = null;
    function renderPanel(fresh) {
      const t = (detail.tasks || []).find((x) => x.key === selected);
      if (!t) {
        set(panel, h('h2', {}, selected), h('p', { class: 'muted' }, 'This task has not started.'));
        return;
      }
      if (!fresh && logKey === t.key && !FINAL.has(t.state)) return; // the log is streaming
      const log = h('pre', { class: 'log', id: 'task-log' }, t.has_log ? '' : '(no log: this task did not run a container)');
      set(panel, 
        h('h2', {}, t.name, ' ', badge(t.state)),
        h('dl', { class: 'kv' },
          h('dt', {}, 'Task'), h('dd', {}, h('code', {}, t.key)),
          h('dt', {}, 'Started'), h('dd', {}, fmtTime(t.started_at)),
          h('dt', {}, 'Duration'), h('dd', {}, fmtDuration(t.started_at, t.finished_at)),
          t.attempt ? [h('dt', {}, 'Attempts'), h('dd', {}, String(t.attempt + 1))] : [],
          t.cached ? [h('dt', {}, 'Cached'), h('dd', {}, 'yes')] : []),
        t.error ? h('div', { class: 'error-box', id: 'task-error' }, t.error) : null,
        paramsTable('Inputs', split(t.inputs).params),
        Object.keys(split(t.inputs).artifacts).length ? [h('h3', {}, 'Input artifacts'), Object.entries(split(t.inputs).artifacts).map(([k, v]) =>
          h('div', {}, h('strong', {}, k), ' ', (Array.isArray(v) ? v : [v]).map((a) => h('div', { class: 'muted' }, h('code', {}, a.uri)))))] : null,
        outputsSection(detail, t),
        h('h3', {}, 'Log'), log);
      if (t.has_log) {
        logKey = t.key;
        const follow = !FINAL.has(t.state);
        stream('/apis/switchyard/v1/runs/' + id + '/logs?task=' + encodeURIComponent(t.key) + (follow ? '&follow=true' : ''),
          (text) => { log.textContent += text; log.scrollTop = log.scrollHeight; }).catch((e) => { if (e.name !== 'AbortError') log.textContent += '\n' + e.message; });
      }
    }

    window.addEventListener('resize', onResize);
    function onResize() { window.SwitchyardGraph.drawEdges(graph); }
    onStop(() => window.removeEventListener('resize', onResize));
    every(1000, refresh);
  }

  const isArtifact = (v) => !!v && typeof v === 'object' && ('uri' in v || (Array.isArray(v) && v.length > 0 && !!v[0] && typeof v[0] === 'object' && 'uri' in v[0]));

  /** {parameters, artifacts} from a task's inputs or outputs, whichever shape they were stored in. */
  function split(values) {
    const v = values || {};
    if (v && typeof v === 'object' && ('parameters' in v || 'artifacts' in v || 'parameterValues' in v)) {
      const params = Object.assign({}, v.parameterValues || {}, v.parameters || {});
      for (const [k, p] of Object.entries(params)) if (p && typeof p === 'object' && 'outputFile' in p) delete params[k];
      return { params, artifacts: v.artifacts || {} };
    }
    const params = {};
    const artifacts = {};
    for (const [k, x] of Object.entries(v)) (isArtifact(x) ? artifacts : params)[k] = x;
    return { params, artifacts };
  }

  function paramsTable(title, values) {
    const entries = Object.entries(values || {});
    if (!entries.length) return null;
    return [h('h3', {}, title), h('table', {}, h('tbody', {}, entries.map(([k, v]) =>
      h('tr', {}, h('th', {}, k.replace(/^pipelinechannel--/, '')), h('td', {}, h('code', {}, show(v)))))))];
  }

  /** The task's entry in its DAG (and its component), found by walking the key's parts. */
  function taskSpec(spec, key) {
    let dag = (spec.root || {}).dag;
    let found = null;
    for (const part of (key || '').split('/')) {
      const t = dag && dag.tasks && dag.tasks[part.replace(/\[\d+\]$/, '')];
      if (!t) return null;
      const comp = (spec.components || {})[(t.componentRef || {}).name] || {};
      found = { task: t, comp };
      dag = comp.dag;
    }
    return found;
  }

  /** Artifact type of a task's output (`system.Metrics`, `system.Model`…), from the compiled spec. */
  function artifactType(spec, task, output) {
    const f = taskSpec(spec, task.key);
    const a = f && f.comp.outputDefinitions && f.comp.outputDefinitions.artifacts && f.comp.outputDefinitions.artifacts[output];
    return (a && a.artifactType && a.artifactType.schemaTitle) || '';
  }

  function outputsSection(detail, t) {
    const { params: outParams, artifacts: outs } = split(t.outputs);
    const params = paramsTable('Outputs', outParams);
    const arts = [];
    for (const [name, v] of Object.entries(outs)) {
      const list = Array.isArray(v) ? v : [v];
      if (!list.length || !list[0] || typeof list[0] !== 'object' || !('uri' in list[0])) continue;
      list.forEach((a, i) => arts.push(artifactView(detail, t, name, i, a)));
    }
    return [params, arts.length ? [h('h3', {}, 'Artifacts'), arts] : null];
  }

  function artifactView(detail, t, name, index, a) {
    const base = '/apis/switchyard/v1/runs/' + detail.run_id + '/artifact?task=' + encodeURIComponent(t.key) +
      '&output=' + encodeURIComponent(name) + '&index=' + index;
    const type = (a.type && a.type.schemaTitle) || artifactType(detail.pipeline_spec || {}, t, name);
    const box = h('div', { class: 'artifact', 'data-output': name });
    const meta = Object.entries(a.metadata || {});
    add(box, h('div', {}, h('strong', {}, name), type ? h('span', { class: 'muted' }, ' ' + type) : null),
      h('div', { class: 'muted' }, h('code', {}, a.uri)));
    if (meta.length) {
      add(box, h('table', { class: type === 'system.Metrics' ? 'metrics' : '' }, h('tbody', {},
        meta.map(([k, v]) => h('tr', {}, h('th', {}, k), h('td', { class: 'num' }, show(v)))))));
    }
    const files = h('div', {});
    add(box, files);
    // Metrics live in the metadata above; their file is usually empty or absent.
    if (type === 'system.Metrics') return box;
    request(base).then(async (res) => {
      const ct = res.headers.get('content-type') || '';
      if (ct.startsWith('application/json') && !/\.json$/.test(a.uri)) {
        const listing = await res.json();
        if (listing.directory) {
          for (const f of listing.files) add(files, f.link ? h('p', { class: 'muted' }, f.path + ' (a link; not served)') : fileView(base + '&file=' + encodeURIComponent(f.path), f.path, f.size, ''));
          if (!listing.files.length) add(files, h('p', { class: 'muted' }, 'empty folder'));
          return;
        }
      }
      add(files, fileView(base, a.uri.split('/').pop(), Number(res.headers.get('content-length') || 0), type));
    }).catch((e) => add(files, h('p', { class: 'muted' }, e.message)));
    return box;
  }

  function fileView(url, name, size, type) {
    const box = h('div', { class: 'file' });
    add(box, h('div', { class: 'actions' },
      h('button', { onclick: () => download(url, name.split('/').pop()) }, 'Download ' + name),
      size ? h('span', { class: 'muted' }, size + ' bytes') : null));
    const kind = previewKind(name, type);
    if (kind && (!size || size <= 256 * 1024)) {
      const pv = h('div', { class: 'preview', 'data-kind': kind });
      add(box, pv);
      request(url + '&preview=true').then(async (res) => {
        const text = await res.text();
        renderPreview(pv, kind === 'text' && looksLikeCsv(text) ? 'csv' : kind, text);
        if (res.headers.get('x-switchyard-truncated') === 'true') add(pv, h('p', { class: 'muted' }, '(first 64 KiB)'));
      }).catch((e) => add(pv, e.message));
    }
    return box;
  }

  /** Two or more lines with the same number of commas (at least one). */
  function looksLikeCsv(text) {
    const lines = text.trim().split(/\r?\n/).slice(0, 20);
    const commas = (l) => (l.match(/,/g) || []).length;
    return lines.length >= 2 && commas(lines[0]) > 0 && lines.every((l) => commas(l) === commas(lines[0]));
  }

  function previewKind(name, type) {
    if (type === 'system.HTML') return 'html';
    if (type === 'system.Markdown') return 'markdown';
    if (type === 'system.Model') return null;
    const ext = name.includes('.') ? (name.split('.').pop() || '').toLowerCase() : '';
    if (ext === 'csv') return 'csv';
    if (ext === 'html' || ext === 'htm') return 'html';
    if (ext === 'md' || ext === 'markdown') return 'markdown';
    if (['txt', 'json', 'log', 'yaml', 'yml', 'py'].includes(ext) || !name.includes('.')) return 'text';
    return null;
  }

  function renderPreview(box, kind, text) {
    if (kind === 'csv') {
      const rows = text.trim().split(/\r?\n/).slice(0, 50).map((l) => l.split(','));
      add(box, h('table', {}, h('thead', {}, h('tr', {}, (rows[0] || []).map((c) => h('th', {}, c)))),
        h('tbody', {}, rows.slice(1).map((r) => h('tr', {}, r.map((c) => h('td', {}, c)))))));
    } else if (kind === 'html') {
      // Sandboxed: the artifact's scripts never run with the dashboard's rights.
      const frame = h('iframe', { sandbox: '', title: 'HTML artifact preview' });
      frame.srcdoc = text;
      add(box, frame);
    } else if (kind === 'markdown') {
      add(box, markdown(text));
    } else {
      add(box, h('pre', {}, text));
    }
  }

  /** A small Markdown subset (headings, lists, code, emphasis, links), built as DOM: no HTML passes through. */
  function markdown(text) {
    const root = h('div', { class: 'md' });
    const inline = (s) => {
      const out = [];
      const re = /(`[^`]+`|\*\*[^*]+\*\*|\*[^*]+\*|\[[^\]]+\]\([^)]+\))/g;
      let last = 0;
      let m;
      while ((m = re.exec(s))) {
        out.push(s.slice(last, m.index));
        const t = m[0];
        if (t[0] === '`') out.push(h('code', {}, t.slice(1, -1)));
        else if (t.startsWith('**')) out.push(h('strong', {}, t.slice(2, -2)));
        else if (t[0] === '*') out.push(h('em', {}, t.slice(1, -1)));
        else {
          const [, label, href] = /\[([^\]]+)\]\(([^)]+)\)/.exec(t);
          out.push(/^https?:/.test(href) ? h('a', { href, rel: 'noopener noreferrer', target: '_blank' }, label) : label);
        }
        last = m.index + t.length;
      }
      out.push(s.slice(last));
      return out;
    };
    let list = null;
    let code = null;
    for (const line of text.split(/\r?\n/)) {
      if (line.startsWith('```')) {
        if (code) { add(root, code); code = null; } else code = h('pre', {});
        continue;
      }
      if (code) { code.textContent += line + '\n'; continue; }
      const head = /^(#{1,4})\s+(.*)$/.exec(line);
      const item = /^\s*[-*]\s+(.*)$/.exec(line);
      if (item) {
        if (!list) { list = h('ul', {}); add(root, list); }
        add(list, h('li', {}, inline(item[1])));
        continue;
      }
      list = null;
      if (head) add(root, h('h' + (head[1].length + 2), {}, inline(head[2])));
      else if (line.trim()) add(root, h('p', {}, inline(line)));
    }
    if (code) add(root, code);
    return root;
  }

  // ------------------------------------------------------------ experiments

  async function experimentsPage(params) {
    const archived = params.get('archived') === '1';
    const all = (await api('/apis/v2beta1/experiments?page_size=1000&sort_by=created_at desc')).experiments || [];
    const list = all.filter((x) => (x.storage_state === 'ARCHIVED') === archived);
    const name = h('input', { id: 'experiment-name', type: 'text', required: true });
    const desc = h('input', { id: 'experiment-description', type: 'text' });
    const msg = h('div', { role: 'alert' });
    const form = h('form', {
      class: 'panel', id: 'experiment-form', onsubmit: async (e) => {
        e.preventDefault();
        if (!name.value.trim()) { set(msg, h('p', { class: 'error' }, 'Give the experiment a name.')); return; }
        try {
          const x = await post('/apis/v2beta1/experiments', { display_name: name.value.trim(), description: desc.value.trim() || undefined });
          location.hash = '#/experiments/' + x.experiment_id;
        } catch (err) {
          set(msg, errorBox(err));
        }
      },
    },
    h('h2', {}, 'Create an experiment'),
    h('div', { class: 'field' }, h('label', { for: 'experiment-name' }, 'Name'), name),
    h('div', { class: 'field' }, h('label', { for: 'experiment-description' }, 'Description'), desc),
    msg,
    h('button', { type: 'submit', class: 'primary' }, 'Create'));
    set(main, h('h1', {}, archived ? 'Archived experiments' : 'Experiments'),
      h('div', { class: 'toolbar' }, h('a', { href: archived ? '#/experiments' : '#/experiments?archived=1' }, archived ? 'Active experiments' : 'Archived experiments')),
      h('div', { class: 'panel table-wrap' }, list.length
        ? h('table', { id: 'experiments-table' },
          h('thead', {}, h('tr', {}, h('th', {}, 'Name'), h('th', { class: 'optional' }, 'Description'), h('th', { class: 'optional' }, 'Created'), h('th', {}, ''))),
          h('tbody', {}, list.map((x) => h('tr', { 'data-experiment': x.experiment_id },
            h('td', {}, h('a', { href: '#/experiments/' + x.experiment_id }, x.display_name)),
            h('td', { class: 'optional' }, x.description || ''),
            h('td', { class: 'optional' }, fmtTime(x.created_at)),
            h('td', {}, experimentAction(x, route))))))
        : h('p', { class: 'muted' }, archived ? 'No archived experiments.' : 'No experiments yet: create one below, or start a run.')),
      archived ? null : form);
  }

  /** Archive or Restore, then `done()`. */
  function experimentAction(x, done) {
    const archived = x.storage_state === 'ARCHIVED';
    return h('button', {
      class: archived ? null : 'danger', onclick: async (e) => {
        e.target.disabled = true;
        try {
          await post('/apis/v2beta1/experiments/' + x.experiment_id + (archived ? ':unarchive' : ':archive'));
          done();
        } catch (err) {
          e.target.replaceWith(errorBox(err));
        }
      },
    }, archived ? 'Restore' : 'Archive');
  }

  async function experimentPage(id) {
    const x = await api('/apis/v2beta1/experiments/' + encodeURIComponent(id));
    const qs = new URLSearchParams({ page_size: '50', sort_by: 'created_at desc', experiment_id: id });
    const runs = (await api('/apis/v2beta1/runs?' + qs)).runs || [];
    set(main, h('h1', {}, x.display_name, x.storage_state === 'ARCHIVED' ? badge('ARCHIVED') : null),
      x.description ? h('p', {}, x.description) : null,
      h('div', { class: 'actions' }, experimentAction(x, route),
        h('a', { class: 'button', href: '#/runs?experiment=' + id }, 'Filter the runs list')),
      h('div', { class: 'panel table-wrap' }, h('h2', {}, 'Runs'),
        runs.length
          ? h('table', { id: 'experiment-runs' },
            h('thead', {}, h('tr', {}, h('th', {}, 'Name'), h('th', {}, 'State'), h('th', { class: 'num' }, 'Duration'), h('th', { class: 'optional' }, 'Created'))),
            h('tbody', {}, runs.map((r) => h('tr', { 'data-run': r.run_id },
              h('td', {}, h('a', { href: '#/runs/' + r.run_id }, r.display_name || r.run_id)),
              h('td', {}, badge(r.state)),
              h('td', { class: 'num' }, fmtDuration(r.created_at, r.finished_at)),
              h('td', { class: 'optional' }, fmtTime(r.created_at))))))
          : h('p', { class: 'muted' }, 'No runs in this experiment yet.')));
    if (runs.some((r) => !FINAL.has(r.state))) {
      const t = setTimeout(() => { if (location.hash.includes(id)) route(); }, 2000);
      onStop(() => clearTimeout(t));
    }
  }

  // ------------------------------------------------------------ schedules

  /** A recurring run's trigger in words. */
  function triggerText(t) {
    const c = (t || {}).cron_schedule;
    const p = (t || {}).periodic_schedule;
    const s = c || p;
    if (!s) return 'once';
    const what = c ? 'cron ' + c.cron : 'every ' + p.interval_second + ' s';
    return what + (s.start_time ? ', from ' + fmtTime(s.start_time) : '') + (s.end_time ? ', until ' + fmtTime(s.end_time) : '');
  }

  /** Pause or Resume a schedule, then `done()`. */
  function scheduleAction(r, done) {
    const on = r.status === 'ENABLED';
    return h('button', {
      class: on ? 'danger' : 'primary', onclick: async (e) => {
        e.target.disabled = true;
        try {
          await post('/apis/v2beta1/recurringruns/' + r.recurring_run_id + (on ? ':disable' : ':enable'));
          done();
        } catch (err) {
          e.target.replaceWith(errorBox(err));
        }
      },
    }, on ? 'Pause' : 'Resume');
  }

  async function schedulesPage() {
    const list = (await api('/apis/v2beta1/recurringruns?page_size=200&sort_by=created_at desc')).recurringRuns || [];
    set(main, h('h1', {}, 'Schedules'),
      h('p', { class: 'muted' }, 'Recurring runs: create them with kfp.Client().create_recurring_run.'),
      h('div', { class: 'panel table-wrap' }, list.length
        ? h('table', { id: 'schedules-table' },
          h('thead', {}, h('tr', {}, h('th', {}, 'Name'), h('th', {}, 'Status'), h('th', {}, 'Trigger'),
            h('th', { class: 'optional' }, 'Next run'), h('th', {}, ''))),
          h('tbody', {}, list.map((r) => h('tr', { 'data-schedule': r.recurring_run_id },
            h('td', {}, h('a', { href: '#/schedules/' + r.recurring_run_id }, r.display_name)),
            h('td', {}, badge(r.status)),
            h('td', {}, triggerText(r.trigger)),
            h('td', { class: 'optional' }, r.status === 'ENABLED' ? fmtTime(r.next_fire_time) : ''),
            h('td', {}, scheduleAction(r, route))))))
        : h('p', { class: 'muted' }, 'No schedules yet.')));
  }

  async function schedulePage(id) {
    const r = await api('/apis/v2beta1/recurringruns/' + encodeURIComponent(id));
    const filter = JSON.stringify({ predicates: [{ key: 'recurring_run_id', operation: 'EQUALS', string_value: id }] });
    const qs = new URLSearchParams({ page_size: '50', sort_by: 'created_at desc', filter });
    const runs = (await api('/apis/v2beta1/runs?' + qs)).runs || [];
    set(main, h('h1', {}, r.display_name, badge(r.status)),
      r.description ? h('p', {}, r.description) : null,
      r.error && r.error.message ? errorBox(r.error.message) : null,
      h('dl', { class: 'kv panel' },
        h('dt', {}, 'Trigger'), h('dd', { id: 'schedule-trigger' }, triggerText(r.trigger)),
        h('dt', {}, 'Next run'), h('dd', {}, r.status === 'ENABLED' ? fmtTime(r.next_fire_time) : 'paused'),
        h('dt', {}, 'At most'), h('dd', {}, r.max_concurrency + ' unfinished runs at once'),
        h('dt', {}, 'Catch up'), h('dd', {}, r.no_catchup ? 'only the latest missed run' : 'every missed run')),
      h('div', { class: 'actions' }, scheduleAction(r, route)),
      h('div', { class: 'panel table-wrap' }, h('h2', {}, 'Runs'),
        runs.length
          ? h('table', { id: 'schedule-runs' },
            h('thead', {}, h('tr', {}, h('th', {}, 'Name'), h('th', {}, 'State'), h('th', { class: 'optional' }, 'Scheduled for'))),
            h('tbody', {}, runs.map((x) => h('tr', { 'data-run': x.run_id },
              h('td', {}, h('a', { href: '#/runs/' + x.run_id }, x.display_name || x.run_id)),
              h('td', {}, badge(x.state)),
              h('td', { class: 'optional' }, fmtTime(x.scheduled_at))))))
          : h('p', { class: 'muted' }, 'It has not fired yet.')));
    const t = setTimeout(() => { if (location.hash.includes(id)) route(); }, 3000);
    onStop(() => clearTimeout(t));
  }

  // ------------------------------------------------------------ pipelines

  async function pipelinesPage() {
    const list = (await api('/apis/v2beta1/pipelines?page_size=200&sort_by=created_at desc')).pipelines || [];
    const file = h('input', { id: 'upload-file', type: 'file', accept: '.yaml,.yml,.json', required: true });
    const name = h('input', { id: 'upload-name', type: 'text', placeholder: 'from the file name' });
    const desc = h('input', { id: 'upload-description', type: 'text' });
    const msg = h('div', { role: 'alert' });
    const form = h('form', {
      class: 'panel', id: 'upload-form', onsubmit: async (e) => {
        e.preventDefault();
        if (!file.files.length) { set(msg, h('p', { class: 'error' }, 'Choose a compiled pipeline file (YAML or JSON).')); return; }
        const body = new FormData();
        body.append('uploadfile', file.files[0]);
        const qs = new URLSearchParams();
        if (name.value.trim()) qs.set('name', name.value.trim());
        if (desc.value.trim()) qs.set('description', desc.value.trim());
        try {
          const p = await api('/apis/v2beta1/pipelines/upload?' + qs, { method: 'POST', body });
          location.hash = '#/pipelines/' + p.pipeline_id;
        } catch (err) {
          set(msg, errorBox(err));
        }
      },
    },
    h('h2', {}, 'Upload a compiled pipeline'),
    h('div', { class: 'field' }, h('label', { for: 'upload-file' }, 'Pipeline file'), file,
      h('span', { class: 'hint' }, 'The YAML that kfp.compiler.Compiler().compile writes.')),
    h('div', { class: 'field' }, h('label', { for: 'upload-name' }, 'Name'), name),
    h('div', { class: 'field' }, h('label', { for: 'upload-description' }, 'Description'), desc),
    msg,
    h('button', { type: 'submit', class: 'primary' }, 'Upload'));
    set(main, h('h1', {}, 'Pipelines'),
      h('div', { class: 'panel table-wrap' }, list.length
        ? h('table', { id: 'pipelines-table' }, h('thead', {}, h('tr', {}, h('th', {}, 'Name'), h('th', { class: 'optional' }, 'Description'), h('th', { class: 'optional' }, 'Created'))),
          h('tbody', {}, list.map((p) => h('tr', {}, h('td', {}, h('a', { href: '#/pipelines/' + p.pipeline_id }, p.display_name || p.name)),
            h('td', { class: 'optional' }, p.description || ''), h('td', { class: 'optional' }, fmtTime(p.created_at))))))
        : h('p', { class: 'muted' }, 'No pipelines yet: upload one below.')),
      form);
  }

  async function pipelinePage(id, versionId) {
    const p = await api('/apis/v2beta1/pipelines/' + id);
    const versions = (await api('/apis/v2beta1/pipelines/' + id + '/versions?page_size=200&sort_by=created_at desc')).pipeline_versions || [];
    set(main, h('h1', {}, p.display_name || p.name),
      p.description ? h('p', {}, p.description) : null,
      h('div', { class: 'panel table-wrap' }, h('h2', {}, 'Versions'),
        h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'Version'), h('th', { class: 'optional' }, 'Created'), h('th', {}, ''))),
          h('tbody', {}, versions.map((v) => h('tr', { 'data-version': v.pipeline_version_id, class: v.pipeline_version_id === versionId ? 'selected' : null },
            h('td', {}, v.display_name || v.name), h('td', { class: 'optional' }, fmtTime(v.created_at)),
            h('td', {}, h('a', { class: 'button primary', href: '#/new-run?pipeline=' + id + '&version=' + v.pipeline_version_id }, 'Start a run'))))))));
  }

  // ------------------------------------------------------------ new run

  const TYPES = {
    STRING: 'text', NUMBER_INTEGER: 'integer', NUMBER_DOUBLE: 'number', BOOLEAN: 'boolean', LIST: 'JSON list', STRUCT: 'JSON object',
  };

  /** Reads one field by its KFP type; returns [value] or throws a message for the person. */
  function parseParam(type, raw) {
    const s = raw.trim();
    switch (type) {
      case 'NUMBER_INTEGER':
        if (!/^[-+]?\d+$/.test(s)) throw new Error('Enter a whole number, like 3.');
        return Number(s);
      case 'NUMBER_DOUBLE':
        if (s === '' || isNaN(Number(s))) throw new Error('Enter a number, like 0.5.');
        return Number(s);
      case 'BOOLEAN':
        return raw === 'true';
      case 'LIST': case 'STRUCT': {
        let v;
        try { v = JSON.parse(s); } catch (e) { throw new Error('Enter valid JSON (' + e.message + ').'); }
        if (type === 'LIST' && !Array.isArray(v)) throw new Error('Enter a JSON list, like [1, 2].');
        if (type === 'STRUCT' && (v === null || typeof v !== 'object' || Array.isArray(v))) throw new Error('Enter a JSON object, like {"a": 1}.');
        return v;
      }
      default:
        return raw;
    }
  }

  async function newRunPage(params) {
    const pid = params.get('pipeline');
    const vid = params.get('version');
    const p = await api('/apis/v2beta1/pipelines/' + pid);
    const v = await api('/apis/v2beta1/pipelines/' + pid + '/versions/' + vid);
    const spec = v.pipeline_spec && v.pipeline_spec.pipeline_spec ? v.pipeline_spec.pipeline_spec : v.pipeline_spec || {};
    const defs = ((spec.root || {}).inputDefinitions || {}).parameters || {};
    const experiments = (await api('/apis/v2beta1/experiments?page_size=1000')).experiments || [];
    const fields = [];
    const form = h('form', { class: 'panel', id: 'run-form', novalidate: true });
    const runName = h('input', { id: 'run-name', type: 'text', value: (p.display_name || p.name) + ' ' + new Date().toISOString().slice(0, 19).replace('T', ' ') });
    const expSel = h('select', { id: 'run-experiment' }, h('option', { value: '' }, 'Default'),
      experiments.map((e) => h('option', { value: e.experiment_id }, e.display_name)));
    add(form, h('div', { class: 'field' }, h('label', { for: 'run-name' }, 'Run name'), runName),
      h('div', { class: 'field' }, h('label', { for: 'run-experiment' }, 'Experiment'), expSel),
      h('h2', {}, 'Parameters'));
    if (!Object.keys(defs).length) add(form, h('p', { class: 'muted' }, 'This pipeline takes no parameters.'));
    for (const [name, d] of Object.entries(defs)) {
      const type = d.parameterType || 'STRING';
      const has = d.defaultValue !== undefined;
      const idf = 'param-' + name;
      let input;
      if (type === 'BOOLEAN') {
        input = h('select', { id: idf, name }, h('option', { value: 'true', selected: d.defaultValue === true }, 'true'),
          h('option', { value: 'false', selected: d.defaultValue !== true }, 'false'));
      } else if (type === 'LIST' || type === 'STRUCT') {
        input = h('textarea', { id: idf, name }, has ? JSON.stringify(d.defaultValue) : '');
      } else {
        input = h('input', { id: idf, name, type: 'text', inputmode: type.startsWith('NUMBER') ? 'decimal' : null, value: has ? String(d.defaultValue) : '' });
      }
      const err = h('span', { class: 'error', id: idf + '-error', role: 'alert' });
      input.setAttribute('aria-describedby', idf + '-error');
      const wrap = h('div', { class: 'field', 'data-param': name },
        h('label', { for: idf }, name, ' ', h('span', { class: 'muted' }, '(' + (TYPES[type] || type) + (has || d.isOptional ? '' : ', required') + ')')),
        input, d.description ? h('span', { class: 'hint' }, d.description) : null, err);
      add(form, wrap);
      fields.push({ name, type, input, err, wrap, required: !has && !d.isOptional });
    }
    const msg = h('div', {});
    add(form, msg, h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Start run'),
      h('a', { class: 'button', href: '#/pipelines/' + pid }, 'Cancel')));
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const values = {};
      let ok = true;
      for (const f of fields) {
        f.err.textContent = '';
        f.wrap.classList.remove('invalid');
        const raw = f.input.value;
        if (!raw.trim() && f.type !== 'STRING' && f.type !== 'BOOLEAN') {
          if (f.required) { f.err.textContent = 'Required.'; f.wrap.classList.add('invalid'); ok = false; }
          continue;
        }
        if (f.type === 'STRING' && !raw && f.required) { f.err.textContent = 'Required.'; f.wrap.classList.add('invalid'); ok = false; continue; }
        try {
          values[f.name] = parseParam(f.type, raw);
        } catch (err) {
          f.err.textContent = err.message;
          f.wrap.classList.add('invalid');
          ok = false;
        }
      }
      if (!ok) { const bad = form.querySelector('.invalid input, .invalid textarea'); if (bad) bad.focus(); return; }
      const body = {
        display_name: runName.value.trim() || (p.display_name || p.name),
        pipeline_version_reference: { pipeline_id: pid, pipeline_version_id: vid },
        runtime_config: { parameters: values },
      };
      if (expSel.value) body.experiment_id = expSel.value;
      try {
        const run = await post('/apis/v2beta1/runs', body);
        location.hash = '#/runs/' + run.run_id;
      } catch (err) {
        set(msg, errorBox(err));
      }
    });
    set(main, h('h1', {}, 'Start a run of ', p.display_name || p.name), form);
  }

  // ------------------------------------------------------------ training jobs

  async function jobsPage() {
    const list = (await api('/apis/switchyard/v1/jobs?page_size=100')).jobs || [];
    set(main, h('h1', {}, 'Training jobs'),
      h('div', { class: 'panel table-wrap' }, list.length
        ? h('table', { id: 'jobs-table' }, h('thead', {}, h('tr', {}, h('th', {}, 'Name'), h('th', {}, 'Backend'), h('th', {}, 'State'),
          h('th', {}, 'Duration'), h('th', { class: 'optional' }, 'Created'))),
          h('tbody', {}, list.map((j) => h('tr', {}, h('td', {}, h('a', { href: '#/jobs/' + j.job_id }, j.name)), h('td', {}, j.backend),
            h('td', {}, badge(j.state)), h('td', { class: 'num' }, fmtDuration(j.started_at || j.created_at, j.finished_at)),
            h('td', { class: 'optional' }, fmtTime(j.created_at))))))
        : h('p', { class: 'muted' }, 'No training jobs yet.')));
    if (list.some((j) => !FINAL.has(j.state))) {
      const t = setTimeout(() => { if (location.hash === '#/jobs') route(); }, 2000);
      onStop(() => clearTimeout(t));
    }
  }

  function placementView(j) {
    const p = j.placement || {};
    const rows = [];
    if (p.kind === 'sagemaker') {
      rows.push(['SageMaker job', p.console_url ? h('a', { href: p.console_url, target: '_blank', rel: 'noopener noreferrer', id: 'console-link' }, p.training_job_name) : p.training_job_name],
        ['Region', p.region], ['Instances', p.instance_count + ' × ' + p.instance_type], ['Logs', p.log_group]);
    } else if (p.kind === 'kubernetes') {
      rows.push(['Namespace', p.namespace], ['PyTorchJob', p.name], ['Pods', (p.pods || []).join(', ')]);
    } else if (p.kind === 'local') {
      rows.push(['Host', p.host], ['Hosts', (p.hosts || []).join(', ') + ' (' + p.procs_per_node + ' processes each)'], ['Folder', h('code', {}, p.job_dir)]);
    } else {
      rows.push(['Where', 'not started yet']);
    }
    return h('dl', { class: 'kv', id: 'placement' }, rows.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
  }

  /** A `backend: auto` job's decision: the objective and every candidate's reason. */
  function decisionView(p) {
    const rows = (p.candidates || []).map((c) => h('tr', { class: c.backend === p.chosen ? 'chosen' : '' },
      h('td', {}, c.backend === p.chosen ? '✓ ' + c.backend : c.backend),
      h('td', {}, c.feasible ? 'yes' : 'no'),
      h('td', {}, c.reason),
      h('td', {}, c.est_cost_usd == null ? '—' : '$' + c.est_cost_usd.toFixed(2))));
    return h('div', {},
      h('p', {}, 'Placed on ', h('code', {}, p.chosen), ' by ', h('code', {}, 'backend: auto'), ' (objective ', h('code', {}, p.objective), ') at ', fmtTime(p.decided_at), '.'),
      h('table', { id: 'placement-candidates' }, h('thead', {}, h('tr', {}, h('th', {}, 'candidate'), h('th', {}, 'can run it'), h('th', {}, 'why'), h('th', {}, 'estimated cost'))), h('tbody', {}, rows)),
      (p.attempts || []).length ? h('table', { id: 'placement-attempts' },
        h('thead', {}, h('tr', {}, h('th', {}, 'attempt'), h('th', {}, 'backend'), h('th', {}, 'started'), h('th', {}, 'ended'), h('th', {}, 'outcome'))),
        h('tbody', {}, p.attempts.map((a, i) => h('tr', {}, h('td', { class: 'num' }, i + 1), h('td', {}, a.backend),
          h('td', {}, fmtTime(a.started_at)), h('td', {}, a.ended_at ? fmtTime(a.ended_at) : '—'), h('td', {}, a.outcome || 'running'))))) : null);
  }

  /** Why this backend: the pipeline task and the conditions above it, or the submitted spec. */
  async function whyView(j) {
    const labels = ((j.spec || {}).metadata || {}).labels || {};
    const runId = labels['switchyard.io/run-id'];
    const taskKey = labels['switchyard.io/task'];
    const backend = ((j.spec || {}).spec || {}).backend || j.backend;
    const placed = j.placement && j.placement.chosen ? decisionView(j.placement) : null;
    if (!runId && placed) return h('div', { id: 'why' }, placed);
    if (!runId) return h('p', { id: 'why' }, 'spec.backend: ', h('code', {}, backend), ' in the submitted TrainingJob (or --backend).');
    const out = h('div', { id: 'why' }, h('p', {}, 'Submitted by task ', h('code', {}, taskKey), ' of run ', h('a', { href: '#/runs/' + runId }, runId), ' with backend ', h('code', {}, backend), '.'));
    if (placed) add(out, placed);
    try {
      const run = await api('/apis/switchyard/v1/runs/' + runId);
      const spec = run.pipeline_spec || {};
      const conds = [];
      const parts = (taskKey || '').split('/');
      for (let i = 1; i <= parts.length; i++) {
        const f = taskSpec(spec, parts.slice(0, i).join('/'));
        if (f && f.task.triggerPolicy && f.task.triggerPolicy.condition) conds.push(window.SwitchyardGraph.prettyCondition(f.task.triggerPolicy.condition));
      }
      if (conds.length) add(out, h('p', {}, 'It ran because ', conds.map((c, i) => [i ? ' and ' : '', h('code', {}, c)]), ' held.'));
      const ps = Object.entries(run.parameters || {});
      if (ps.length) add(out, h('p', { class: 'muted' }, 'Run parameters: ', ps.map(([k, v], i) => [i ? ', ' : '', h('code', {}, k + '=' + show(v))])));
      const upstream = (run.tasks || []).filter((t) => t.kind === 'container' && t.key !== taskKey && conds.some((c) => c.includes(t.key.split('/').pop())));
      for (const t of upstream) {
        const vals = Object.entries(split(t.outputs).params).map(([k, v]) => k + ' = ' + show(v)).join(', ');
        add(out, h('p', { class: 'muted' }, 'Task ', h('code', {}, t.key), ' returned ', h('code', {}, vals || '(nothing)')));
      }
    } catch (e) {
      add(out, h('p', { class: 'muted' }, e.message));
    }
    return out;
  }

  // ------------------------------------------------------------ KPIs

  const SVG_NS = 'http://www.w3.org/2000/svg';

  /** An empty chart W × H labelled `label`, and `mk(tag, attrs, text)`, which adds an element to it. */
  function svgChart(W, H, label) {
    const svg = document.createElementNS(SVG_NS, 'svg');
    svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
    svg.setAttribute('class', 'chart');
    svg.setAttribute('role', 'img');
    svg.setAttribute('aria-label', label);
    const mk = (tag, attrs, text) => {
      const e = document.createElementNS(SVG_NS, tag);
      for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
      if (text !== undefined) e.textContent = text;
      add(svg, e);
      return e;
    };
    return [svg, mk];
  }

  /** A bar chart: one group of bars per category, one bar per series. */
  function barChart(id, title, categories, series, fmt, top) {
    const W = 640, H = 220, L = 56, B = 34, T = 24, R = 10;
    const [svg, mk] = svgChart(W, H, title);
    svg.id = id;
    const max = top || Math.max(0, ...series.flatMap((s) => s.values)) || 1;
    const sy = (v) => H - B - (v / max) * (H - B - T);
    mk('text', { x: L, y: 14 }, title);
    mk('line', { class: 'axis', x1: L, y1: H - B, x2: W - R, y2: H - B });
    mk('line', { class: 'axis', x1: L, y1: T, x2: L, y2: H - B });
    mk('text', { x: 2, y: T + 4 }, fmt(max));
    mk('text', { x: 2, y: H - B }, fmt(0));
    const slot = (W - L - R) / Math.max(1, categories.length);
    const bar = Math.min(48, Math.max(2, (slot * 0.8) / Math.max(1, series.length)));
    categories.forEach((c, i) => {
      mk('text', { x: L + i * slot + 2, y: H - B + 14 }, c);
      series.forEach((s, j) => {
        const v = s.values[i] || 0;
        const r = mk('rect', { x: (L + i * slot + slot * 0.1 + j * bar).toFixed(1), y: sy(v).toFixed(1), width: (bar - 1).toFixed(1), height: (H - B - sy(v)).toFixed(1), class: 'bar bar-' + j, 'data-series': s.name, 'data-category': c, 'data-value': v });
        const tip = document.createElementNS(SVG_NS, 'title');
        tip.textContent = `${s.name} ${c}: ${fmt(v)}`;
        r.append(tip);
      });
    });
    series.forEach((s, j) => {
      mk('rect', { x: W - R - 120, y: T + j * 14 - 8, width: 10, height: 10, class: 'bar bar-' + j });
      mk('text', { x: W - R - 106, y: T + j * 14 + 1 }, s.name);
    });
    return svg;
  }

  async function kpiPage(params) {
    const from = params.get('from') || '';
    const to = params.get('to') || '';
    const range = new URLSearchParams();
    if (from) range.set('from', from);
    if (to) range.set('to', to);
    const q = (group) => '/apis/switchyard/v1/kpis?group_by=' + group + (range.toString() ? '&' + range : '');
    const [byDay, byBackend] = await Promise.all([api(q('backend,day')), api(q('backend'))]);
    const backends = byBackend.rows.map((r) => r.backend);
    const days = [...new Set(byDay.rows.map((r) => r.day))].sort();
    const perDay = (field) => backends.map((b) => ({ name: b, values: days.map((d) => { const r = byDay.rows.find((x) => x.backend === b && x.day === d); return r ? r[field] : 0; }) }));
    // Cents, or two significant digits below a cent (a short job's cost).
    const usd = (v) => '$' + (v > 0 && v < 0.01 ? Number(v).toPrecision(2) : Number(v).toFixed(2));
    const num = (v) => Number(Number(v).toPrecision(3)).toString();
    const buckets = Object.values(byDay.queue_histogram)[0] || [];
    const bounds = buckets.map(([le]) => (le === '+Inf' ? '> ' + buckets[buckets.length - 2][0] + ' s' : '≤ ' + le + ' s'));
    // The histogram is cumulative (as Prometheus'); bars show each bucket.
    const queue = backends.map((b) => {
      const c = (byBackend.queue_histogram[b] || []).map(([, n]) => n);
      return { name: b, values: c.map((n, i) => n - (i ? c[i - 1] : 0)) };
    });
    const form = h('form', { class: 'toolbar', id: 'kpi-range', onsubmit: (e) => {
      e.preventDefault();
      const p = new URLSearchParams();
      if (e.target.from.value) p.set('from', e.target.from.value);
      if (e.target.to.value) p.set('to', e.target.to.value);
      location.hash = '#/kpis' + (p.toString() ? '?' + p : '');
    } },
    h('label', {}, 'From ', h('input', { type: 'date', name: 'from', value: from })),
    h('label', {}, ' to ', h('input', { type: 'date', name: 'to', value: to })),
    h('button', { type: 'submit' }, 'Show'),
    h('button', { type: 'button', id: 'kpi-csv', onclick: () => download(q('backend,day') + '&format=csv', 'switchyard-kpis.csv') }, 'Download CSV'));
    const t = byBackend.totals;
    set(main, h('h1', {}, 'Training KPIs'), form,
      h('p', { class: 'muted', id: 'kpi-summary' }, `${t.jobs} finished jobs, ${Math.round(t.success_rate * 100)}% succeeded, ${usd(t.est_cost_usd)} estimated cost`,
        t.jobs_not_costed ? ` (${t.jobs_not_costed} on backends whose cost is not counted)` : '', `, ${usd(t.spot_savings_usd)} saved by spot, ${num(t.gpu_hours)} GPU-hours.`),
      t.jobs ? h('div', { class: 'charts', id: 'kpi-charts' },
        barChart('kpi-cost', 'Estimated cost per backend per day (USD)', days, perDay('est_cost_usd'), usd),
        barChart('kpi-gpu', 'GPU-hours per backend per day', days, perDay('gpu_hours'), num),
        barChart('kpi-queue', 'Queue time (submission to all ranks running): jobs', bounds, queue, num),
        barChart('kpi-success', 'Success rate per backend (%)', backends, [{ name: 'succeeded', values: byBackend.rows.map((r) => Math.round(r.success_rate * 1000) / 10) }], (v) => num(v) + '%', 100))
        : h('p', { class: 'muted' }, 'No finished training jobs in this range.'),
      h('div', { class: 'panel table-wrap' }, h('table', { id: 'kpi-table' },
        h('thead', {}, h('tr', {}, ['backend', 'jobs', 'succeeded', 'failed', 'canceled', 'queue p50', 'node-hours', 'GPU-hours', 'est. cost', 'spot saved'].map((c) => h('th', {}, c)))),
        h('tbody', {}, byBackend.rows.map((r) => h('tr', { 'data-backend': r.backend }, h('td', {}, r.backend), h('td', { class: 'num' }, r.jobs), h('td', { class: 'num' }, r.succeeded),
          h('td', { class: 'num' }, r.failed), h('td', { class: 'num' }, r.canceled), h('td', { class: 'num' }, r.queue_seconds_p50 == null ? '—' : num(r.queue_seconds_p50) + ' s'),
          h('td', { class: 'num' }, num(r.instance_hours)), h('td', { class: 'num' }, num(r.gpu_hours)),
          h('td', { class: 'num' }, r.jobs_not_costed === r.jobs ? 'not counted' : usd(r.est_cost_usd)), h('td', { class: 'num' }, usd(r.spot_savings_usd))))))));
  }

  function chart(name, points) {
    const W = 320, H = 160, L = 44, B = 22, T = 18, R = 10;
    const last = points[points.length - 1];
    const [svg, mk] = svgChart(W, H, `${name}: ${points.length} values, last ${last.value}`);
    svg.dataset.metric = name;
    const xs = points.map((p) => new Date(p.at).getTime());
    const ys = points.map((p) => p.value);
    let [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    if (x1 === x0) x1 = x0 + 1;
    if (y1 === y0) { y1 += 0.5; y0 -= 0.5; }
    const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
    const sy = (y) => H - B - ((y - y0) / (y1 - y0)) * (H - B - T);
    mk('text', { x: L, y: 12 }, `${name} (last ${Number(last.value.toPrecision(4))})`);
    mk('line', { class: 'axis', x1: L, y1: H - B, x2: W - R, y2: H - B });
    mk('line', { class: 'axis', x1: L, y1: T, x2: L, y2: H - B });
    mk('text', { x: 2, y: T + 4 }, Number(y1.toPrecision(3)));
    mk('text', { x: 2, y: H - B }, Number(y0.toPrecision(3)));
    mk('text', { x: L, y: H - 6 }, new Date(x0).toLocaleTimeString());
    mk('text', { x: W - R - 60, y: H - 6 }, new Date(x1).toLocaleTimeString());
    mk('polyline', { class: 'line', points: points.map((p, i) => `${sx(xs[i]).toFixed(1)},${sy(p.value).toFixed(1)}`).join(' ') });
    for (let i = 0; i < points.length; i++) mk('circle', { cx: sx(xs[i]).toFixed(1), cy: sy(points[i].value).toFixed(1), r: 2.2, fill: 'currentColor', class: 'point' });
    return svg;
  }

  // A rank's progress report (Kubeflow Trainer's progress API, recorded as
  // the job's trainer_* metrics): percentage, time left, when reported.
  function progressView(series) {
    const last = (n) => { const p = series[n]; return p && p.length ? p[p.length - 1] : null; };
    const pct = last('trainer_progress_percentage');
    if (!pct) return [];
    const left = last('trainer_estimated_remaining_seconds');
    return [h('dt', {}, 'Progress'), h('dd', { id: 'job-progress' },
      h('progress', { max: '100', value: String(pct.value) }), ' ', h('span', { class: 'pct' }, `${pct.value} %`),
      left ? h('span', { class: 'left' }, ` · about ${fmtDuration(new Date(0).toISOString(), new Date(left.value * 1000).toISOString())} left`) : '',
      h('span', { class: 'muted' }, ` · reported ${fmtTime(pct.at)}`))];
  }

  async function jobPage(id) {
    const head = h('h1', {});
    const actions = h('div', { class: 'actions' });
    const summary = h('dl', { class: 'kv' });
    const where = h('div', {});
    const why = h('div', {});
    const charts = h('div', { class: 'charts', id: 'charts' });
    const events = h('tbody', {});
    const rankSel = h('select', { id: 'rank' });
    const log = h('pre', { class: 'log', id: 'job-log' });
    set(main, head, actions,
      h('section', { class: 'panel' }, summary),
      h('section', { class: 'panel' }, h('h2', {}, 'Where it runs'), where, h('h2', {}, 'Why this backend'), why),
      h('section', { class: 'panel' }, h('h2', {}, 'Metrics'), charts),
      h('section', { class: 'panel table-wrap' }, h('h2', {}, 'State history'), h('table', { id: 'job-events' }, h('tbody', {}, events))),
      h('section', { class: 'panel' }, h('h2', {}, 'Logs'), h('div', { class: 'toolbar' }, h('label', { for: 'rank' }, 'Rank'), rankSel), log));
    let whyDone = false;
    let ranksDone = false;
    const openLog = (j) => {
      log.textContent = '';
      const r = rankSel.value;
      const follow = r !== '' && !FINAL.has(j.state);
      stream('/apis/switchyard/v1/jobs/' + id + '/logs' + (r === '' ? '' : '?rank=' + r + (follow ? '&follow=true' : '')),
        (t) => { log.textContent += t; log.scrollTop = log.scrollHeight; }).catch((e) => { if (e.name !== 'AbortError') log.textContent = e.message; });
    };
    every(1500, async () => {
      const j = await api('/apis/switchyard/v1/jobs/' + id);
      set(head, j.name, badge(j.state));
      set(actions, FINAL.has(j.state) ? null : h('button', {
        class: 'danger', onclick: async (e) => { e.target.disabled = true; await post('/apis/switchyard/v1/jobs/' + j.job_id + ':cancel').catch((err) => add(actions, errorBox(err))); },
      }, 'Cancel job'));
      const m = await api('/apis/switchyard/v1/jobs/' + id + '/metrics');
      const series = Object.entries(m.series || {});
      set(summary, 
        h('dt', {}, 'Job'), h('dd', {}, h('code', {}, j.job_id)),
        h('dt', {}, 'Backend'), h('dd', { id: 'job-backend' }, j.backend),
        h('dt', {}, 'Duration'), h('dd', {}, fmtDuration(j.started_at || j.created_at, j.finished_at)),
        h('dt', {}, 'Restarts'), h('dd', {}, String(j.restarts || 0)),
        progressView(m.series || {}),
        j.model ? [h('dt', {}, 'Model'), h('dd', {}, h('code', {}, j.model))] : [],
        j.failure_reason ? [h('dt', {}, 'Failure'), h('dd', { class: 'error' }, j.failure_reason)] : []);
      set(where, placementView(j));
      if (!whyDone) { whyDone = true; set(why, await whyView(j)); }
      set(events, ...(j.events || []).map((e) => h('tr', {}, h('td', { class: 'optional' }, fmtTime(e.at)), h('td', {}, badge(e.state)), h('td', {}, e.message || ''))));
      set(charts, ...(series.length ? series.map(([n, pts]) => chart(n, pts)) : [h('p', { class: 'muted' }, 'No metric values yet (spec.metrics scrapes them from the logs).')]));
      if (!ranksDone) {
        ranksDone = true;
        const spec = (j.spec || {}).spec || {};
        const world = (spec.nodes || 1) * (spec.procsPerNode || 1);
        set(rankSel, h('option', { value: '' }, 'all ranks'), Array.from({ length: world }, (_, r) => h('option', { value: String(r) }, 'rank ' + r)));
        rankSel.addEventListener('change', () => openLog(j));
        openLog(j);
      }
      return !FINAL.has(j.state);
    });
  }

  route();
})();
