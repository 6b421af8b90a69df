// The run graph: the pipeline's DAGs from its compiled spec, coloured by the
// run's task records. Conditions, condition branches, loops (one box per
// iteration), exit handlers and nested pipelines are groups; tasks are boxes
// that show their state as a colour and as a word. Edges are drawn in SVG
// between the boxes of one DAG after layout.
(function () {
  'use strict';

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function badge(state) {
    return el('span', 'state state-' + state, state);
  }

  /** `inputs.parameter_values['pipelinechannel--check-Output'] == 'x'` → `check-Output == 'x'`. */
  function prettyCondition(c) {
    return String(c || '')
      .replace(/inputs\.parameter_values\[['"]pipelinechannel--([^'"]+)['"]\]/g, '$1')
      .replace(/inputs\.parameter_values\[['"]([^'"]+)['"]\]/g, '$1');
  }

  /** Task names of one DAG in layers: a task sits one below its deepest dependency. */
  function layers(tasks) {
    const depth = {};
    const visiting = new Set();
    function d(name) {
      if (depth[name] !== undefined) return depth[name];
      if (visiting.has(name)) return 0;
      visiting.add(name);
      const deps = (tasks[name].dependentTasks || []).filter((x) => tasks[x]);
      const v = deps.length ? Math.max(...deps.map(d)) + 1 : 0;
      visiting.delete(name);
      depth[name] = v;
      return v;
    }
    const out = [];
    for (const name of Object.keys(tasks).sort()) {
      const k = d(name);
      (out[k] = out[k] || []).push(name);
    }
    return out.filter(Boolean);
  }

  function loopInfo(t) {
    const it = t.parameterIterator || t.artifactIterator;
    if (!it) return '';
    let over = '';
    if (it.items && it.items.raw !== undefined) over = 'over ' + it.items.raw;
    else if (it.items && it.items.inputParameter) over = 'over ' + prettyCondition(it.items.inputParameter).replace(/^pipelinechannel--/, '');
    else if (it.items && it.items.inputArtifact) over = 'over ' + it.items.inputArtifact.replace(/^pipelinechannel--/, '');
    const limit = t.iteratorPolicy && t.iteratorPolicy.parallelismLimit;
    return over + (limit ? ' (at most ' + limit + ' at once)' : '');
  }

  function iterationsOf(key, records) {
    const prefix = key + '[';
    const seen = new Set();
    for (const r of records) {
      if (r.key.startsWith(prefix)) {
        const m = /^\[(\d+)\]/.exec(r.key.slice(key.length));
        if (m) seen.add(Number(m[1]));
      }
    }
    return [...seen].sort((a, b) => a - b);
  }

  function renderDag(dag, prefix, ctx, skipped) {
    const wrap = el('div', 'dag');
    const tasks = (dag && dag.tasks) || {};
    const nodes = {};
    for (const layer of layers(tasks)) {
      const row = el('div', 'layer');
      for (const name of layer) {
        const node = renderTask(name, tasks[name], prefix, ctx, skipped);
        nodes[name] = node;
        row.append(node);
      }
      wrap.append(row);
    }
    wrap._edges = [];
    for (const name of Object.keys(tasks)) {
      for (const dep of tasks[name].dependentTasks || []) {
        if (nodes[dep]) wrap._edges.push([nodes[dep], nodes[name]]);
      }
    }
    return wrap;
  }

  function renderTask(name, t, prefix, ctx, skipped) {
    const key = prefix ? prefix + '/' + name : name;
    const rec = ctx.byKey.get(key);
    const comp = ctx.spec.components[(t.componentRef || {}).name] || {};
    const display = (t.taskInfo && t.taskInfo.name) || name;
    const state = rec ? rec.state : skipped ? 'SKIPPED' : 'PENDING';
    if (comp.dag) {
      const loop = t.parameterIterator || t.artifactIterator;
      const kind = loop ? 'loop' : name.startsWith('condition-branches') ? 'branches'
        : (t.triggerPolicy && t.triggerPolicy.condition) ? 'condition'
        : name.startsWith('exit-handler') ? 'exit-handler' : 'pipeline';
      const group = el('div', 'group kind-' + kind + ' state-' + state);
      group.dataset.key = key;
      group.dataset.state = state;
      const title = el('div', 'group-title');
      const label = { loop: 'ParallelFor', branches: 'If / Elif / Else', condition: 'If', 'exit-handler': 'Exit handler', pipeline: 'Pipeline' }[kind];
      title.append(el('b', '', label), el('span', '', display));
      if (kind === 'condition') title.append(el('code', '', prettyCondition(t.triggerPolicy.condition)));
      if (kind === 'loop') title.append(el('span', '', loopInfo(t)));
      title.append(badge(state));
      group.append(title);
      const skip = skipped || state === 'SKIPPED';
      if (loop) {
        const iters = iterationsOf(key, ctx.records);
        const box = el('div', 'iterations');
        if (!iters.length) {
          const one = el('div', 'iteration');
          one.append(el('div', 'iter-title', skip ? 'skipped' : 'iterations not started'), renderDag(comp.dag, key + '[?]', ctx, skip));
          box.append(one);
        }
        for (const i of iters) {
          const one = el('div', 'iteration');
          one.append(el('div', 'iter-title', 'iteration ' + i), renderDag(comp.dag, key + '[' + i + ']', ctx, skip));
          box.append(one);
        }
        group.append(box);
      } else {
        group.append(renderDag(comp.dag, key, ctx, skip));
      }
      return group;
    }
    const node = el('button', 'node state-' + state + (rec && rec.cached ? ' cached' : ''));
    node.type = 'button';
    node.dataset.key = key;
    node.dataset.state = state;
    node.setAttribute('aria-label', display + ': ' + state);
    node.append(el('span', 'title', display), badge(state));
    if (rec && rec.attempt > 0) node.append(el('span', 'muted', 'attempt ' + (rec.attempt + 1)));
    if (key === ctx.selected) node.classList.add('selected');
    node.addEventListener('click', () => ctx.onSelect(key));
    return node;
  }

  function drawEdges(root) {
    const ns = 'http://www.w3.org/2000/svg';
    for (const dag of root.querySelectorAll('.dag')) {
      const old = dag.querySelector(':scope > svg.edges');
      if (old) old.remove();
      if (!dag._edges || !dag._edges.length) continue;
      const base = dag.getBoundingClientRect();
      const svg = document.createElementNS(ns, 'svg');
      svg.setAttribute('class', 'edges');
      svg.setAttribute('width', String(dag.scrollWidth));
      svg.setAttribute('height', String(dag.scrollHeight));
      svg.setAttribute('aria-hidden', 'true');
      for (const [a, b] of dag._edges) {
        const ra = a.getBoundingClientRect();
        const rb = b.getBoundingClientRect();
        const x1 = ra.left + ra.width / 2 - base.left, y1 = ra.bottom - base.top;
        const x2 = rb.left + rb.width / 2 - base.left, y2 = rb.top - base.top;
        const mid = (y1 + y2) / 2;
        const path = document.createElementNS(ns, 'path');
        path.setAttribute('d', `M${x1},${y1} C${x1},${mid} ${x2},${mid} ${x2},${y2 - 4}`);
        path.setAttribute('fill', 'none');
        path.setAttribute('stroke', '#8793a6');
        path.setAttribute('stroke-width', '1.5');
        const head = document.createElementNS(ns, 'path');
        head.setAttribute('d', `M${x2 - 4},${y2 - 8} L${x2},${y2 - 1} L${x2 + 4},${y2 - 8} Z`);
        head.setAttribute('fill', '#8793a6');
        svg.append(path, head);
      }
      dag.prepend(svg);
    }
  }

  /** Draws the run into `container`; `onSelect(key)` is called when a task is clicked. */
  function render(container, spec, records, opts) {
    const ctx = {
      spec: { components: spec.components || {}, root: spec.root || {} },
      records,
      byKey: new Map(records.map((r) => [r.key, r])),
      selected: opts.selected,
      onSelect: opts.onSelect,
    };
    const scroll = container.scrollLeft;
    container.replaceChildren(renderDag(ctx.spec.root.dag, '', ctx, false));
    container.scrollLeft = scroll;
    requestAnimationFrame(() => drawEdges(container));
  }

  window.SwitchyardGraph = { render, drawEdges, prettyCondition, layers };
})();
