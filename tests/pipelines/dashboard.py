"""Pipelines the dashboard tests open in a browser: artifacts of every
previewable kind (CSV, HTML, Markdown, Metrics), a step slow enough to be
seen running, and a training job chosen by a condition."""
import pathlib

from kfp import components, dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Output

from common import BASE


@dsl.component(base_image=BASE)
def make_report(rows: int, table: Output[Dataset], page: Output[HTML], notes: Output[Markdown], scores: Output[Metrics]):
    with open(table.path, "w") as f:
        f.write("name,value\n" + "".join(f"row{i},{i * i}\n" for i in range(rows)))
    table.metadata["rows"] = rows
    with open(page.path, "w") as f:
        f.write("<html><body><h1 id='report-title'>Quarterly report</h1><script>parent.document.title='pwned'</script></body></html>")
    with open(notes.path, "w") as f:
        f.write("# Notes\n\n- first **bold** point\n- second point with `code`\n")
    scores.log_metric("accuracy", 0.93)
    scores.log_metric("loss", 0.21)
    print(f"report with {rows} rows written")


@dsl.component(base_image=BASE)
def summarize(table: Input[Dataset], pause: float) -> str:
    import time
    time.sleep(pause)
    lines = open(table.path).read().splitlines()
    print(f"summary of {len(lines) - 1} rows")
    return f"{len(lines) - 1} rows"


@dsl.pipeline(name="dashboard-report")
def dashboard_report(rows: int = 4, pause: float = 2.0) -> str:
    r = make_report(rows=rows)
    return summarize(table=r.outputs["table"], pause=pause).output


training_job = components.load_component_from_file(
    str(pathlib.Path(__file__).resolve().parents[2] / "components" / "training-job" / "component.yaml"))


@dsl.component(base_image=BASE)
def choose(runtime: str) -> str:
    return runtime.strip().lower()


@dsl.pipeline(name="dashboard-training")
def dashboard_training(runtime: str = "local", epochs: int = 4):
    c = choose(runtime=runtime)
    with dsl.If(c.output == "local"):
        training_job(name="progress", backend="local", source_dir="tests/jobs/progress", entry_point="train.py",
                     hyperparameters={"epochs": epochs}, resources={"cpu": 0.5},
                     metrics=[{"name": "loss", "regex": "loss=([0-9.]+)"}]).set_caching_options(False)
