"""`datagen run --dry-run`: request and token ceilings per step, priced, with nothing sent and nothing written."""

from __future__ import annotations

from click.testing import CliRunner

from datagen.cli import cli
from datagen.estimate import estimate_run
from datagen.run import load_plan
from tests.plugins.faults import MODEL_ID


def write_config(tmp_path, url: str) -> None:
    (tmp_path / "run.yaml").write_text(
        f"name: dry\nout_dir: {tmp_path / 'outputs'}\n"
        f"endpoint: {{base_url: '{url}', model: {MODEL_ID}}}\n"
        f"prices: {{{MODEL_ID}: {{input: 1.0, output: 2.0}}}}\n"
        "self_qa: {docs: seeds/docs, max_chunks: 3, questions_per_chunk: 2}\n"
        "self_kg: {graph: seeds/kg/plants.tsv, num: 5, mode: llm}\n"
    )


def test_dry_run_prints_ceilings_and_sends_and_writes_nothing(fault_server, tmp_path):
    write_config(tmp_path, fault_server.url)
    result = CliRunner().invoke(cli, ["run", str(tmp_path / "run.yaml"), "--dry-run"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = {tuple(line.split()[:2]): line.split() for line in result.output.splitlines()[1:]}
    assert lines[("self_qa", "questions")][2] == "3" and lines[("self_qa", "answers")][2] == "6"
    assert lines[("self_kg", "verbalise")][2] == "5"
    assert not fault_server.log and not (tmp_path / "outputs").exists()


def test_the_estimate_bounds_what_a_real_run_asks_for(fault_server, tmp_path):
    write_config(tmp_path, fault_server.url)
    plan = load_plan(tmp_path / "run.yaml")
    steps = {(s.stage, s.step): s for s in estimate_run(plan.stages, plan.llm)}
    result = CliRunner().invoke(cli, ["run", str(tmp_path / "run.yaml")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    asked = [e["body"] for e in fault_server.log]
    questions = [b for b in asked if "new questions" in b["messages"][-1]["content"]]
    answers = [b for b in asked if "Question:" in b["messages"][-1]["content"]]
    assert len(questions) == steps[("self_qa", "questions")].requests  # exact: one request per chunk
    assert len(answers) <= steps[("self_qa", "answers")].requests
    assert len(asked) - len(questions) - len(answers) == steps[("self_kg", "verbalise")].requests
    for step in steps.values():  # priced at 1 and 2 USD per million tokens, no batch discount
        expected = (step.requests * step.prompt_tokens * 1.0 + step.requests * step.completion_tokens * 2.0) / 1e6
        assert step.cost_usd == round(expected, 6)
    # ~4 characters a token away from the embedded model: the estimate is within 2x of the real prompts
    real = sum(len(b["messages"][-1]["content"]) + len(b["messages"][0]["content"]) for b in questions) / 4
    estimated = steps[("self_qa", "questions")].requests * steps[("self_qa", "questions")].prompt_tokens
    assert real / 2 <= estimated <= real * 2
