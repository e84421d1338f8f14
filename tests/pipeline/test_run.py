"""`datagen run`: config validation, stage skipping, resume with zero calls, manifest contents."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess

import pytest
import yaml
from click.testing import CliRunner

from datagen.cli import cli
from tests.conftest import PLANTED_API_KEY
from tests.generate.test_self_instruct import scripted
from tests.plugins.faults import MODEL_ID


def write_config(tmp_path, url, **sections):
    config = {
        "name": "t",
        "out_dir": str(tmp_path / "outputs"),
        "endpoint": {"base_url": url, "model": MODEL_ID, "cache_path": str(tmp_path / "cache.sqlite")},
        "self_instruct": {
            "seeds": "seeds/seed_tasks.jsonl",
            "num_instructions": 6,
            "batch_size": 2,
            "classifier_eval_seeds": 4,
        },
    }
    config.update(sections)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("processes", [1, 2])
def test_run_then_resume_does_nothing_and_calls_nothing(fault_server, tmp_path, monkeypatch, processes):
    monkeypatch.setenv("DATAGEN_API_KEY", PLANTED_API_KEY)
    fault_server.responder = scripted()
    config = write_config(tmp_path, fault_server.url)
    if processes > 1:  # the same run with the SDK in sender processes
        plain = yaml.safe_load(config.read_text())
        plain["endpoint"]["processes"] = processes
        config.write_text(yaml.safe_dump(plain))
    first = invoke("run", config)
    assert first.exit_code == 0, first.output
    run_dir = tmp_path / "outputs" / "t"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    stage = manifest["stages"]["self_instruct"]
    assert manifest["complete"] and stage["outputs"]["records.jsonl"]["records"] > 0
    assert stage["llm"]["succeeded"] == len(fault_server.log) and stage["inputs"]["seeds"]
    assert manifest["versions"]["openai"] and "self_instruct" in manifest["config"]
    calls = len(fault_server.log)

    again = invoke("run", config, "--resume")
    assert again.exit_code == 0 and "0 stage(s) ran, 1 skipped" in again.output
    assert len(fault_server.log) == calls
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert PLANTED_API_KEY.encode() not in path.read_bytes(), path


def test_changed_config_reruns_only_that_stage(fault_server, tmp_path):
    fault_server.responder = scripted()
    config = write_config(tmp_path, fault_server.url)
    assert invoke("run", config).exit_code == 0
    more = invoke("run", config, "--resume", "self_instruct.num_instructions=8")
    assert more.exit_code == 0 and "1 stage(s) ran" in more.output
    manifest = json.loads((tmp_path / "outputs" / "t" / "manifest.json").read_text())
    assert (
        json.loads((tmp_path / "outputs" / "t" / "self_instruct" / "stats.json").read_text())["machine_instructions"]
        == 8
    )
    assert manifest["overrides"] == ["self_instruct.num_instructions=8"]


def test_existing_run_needs_resume(fault_server, tmp_path):
    fault_server.responder = scripted()
    config = write_config(tmp_path, fault_server.url)
    assert invoke("run", config).exit_code == 0
    again = invoke("run", config)
    assert again.exit_code == 2 and "--resume" in again.output


@pytest.mark.parametrize(
    "mutate,fragment",
    [
        (lambda c: c.update(self_instrct={}), "unknown key 'self_instrct' (did you mean 'self_instruct'?)"),
        (
            lambda c: c["self_instruct"].update(num_instruction=3),
            "unknown key 'num_instruction' (did you mean 'num_instructions'?)",
        ),
        (
            lambda c: c["self_instruct"].update(num_instructions="many"),
            "self_instruct.num_instructions: expected an integer",
        ),
        (lambda c: c["self_instruct"].update(num_instructions=-3), "must be ≥ 1"),
        (lambda c: c["self_instruct"].update(lang="fr"), "lang must be one of"),
        (lambda c: c["endpoint"].update(concurrency=0), "llm.concurrency must be ≥ 1"),
        (lambda c: c["endpoint"].update(timeout="soon"), "endpoint.timeout: expected a number"),
        (lambda c: c["endpoint"].update(processes=0), "llm.processes must be ≥ 1"),
        (lambda c: c["endpoint"].update(processes="four"), "endpoint.processes: expected an integer"),
        (lambda c: c.update(name="bad name!"), "name must be letters"),
        (lambda c: c.pop("self_instruct"), "no stage is configured"),
    ],
)
def test_config_errors_name_the_key_and_exit_2(tmp_path, mutate, fragment):
    config = {
        "name": "t",
        "out_dir": str(tmp_path / "o"),
        "endpoint": {"base_url": "http://127.0.0.1:9/v1"},
        "self_instruct": {"seeds": "seeds/seed_tasks.jsonl"},
    }
    mutate(config)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    result = invoke("run", path)
    assert result.exit_code == 2 and fragment in result.output, result.output
    assert not (tmp_path / "o").exists()


def test_yaml_syntax_error_names_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\nself_instruct:\n  seeds: [unclosed\n")
    result = invoke("run", path)
    assert result.exit_code == 2 and f"{path}:" in result.output and "invalid YAML" in result.output


def test_bad_override_is_a_usage_error(tmp_path):
    result = invoke("run", "configs/none.yaml", "novalue")
    assert result.exit_code == 2


def test_report_is_self_contained_and_escapes_generated_text(fault_server, tmp_path):
    base = scripted()

    def respond(kind, body):
        prompt = body.get("prompt", "")
        if "Come up with examples" in prompt:
            return "Input: <noinput>\nOutput: <script>alert('x')</script> {{ 7*7 }}"
        return base(kind, body)

    fault_server.responder = respond
    config = write_config(tmp_path, fault_server.url)
    assert invoke("run", config).exit_code == 0
    html = (tmp_path / "outputs" / "t" / "report.html").read_text(encoding="utf-8")
    assert "<script>alert" not in html and "&lt;script&gt;alert" in html and "{{ 7*7 }}" in html
    assert "http://" not in html.replace(fault_server.url, "") and "https://" not in html  # nothing fetched
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert {"records kept per stage", "length distributions", "root verbs and objects", "similarity to pool"} <= {
        alt for alt, _ in images
    }
    assert all(base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n" for _, data in images)


def test_verb_object_extraction():
    from datagen.report import verb_object

    assert verb_object("Write a short poem about the sea.") == ("write", "poem")
    assert verb_object("Please classify the following review.") == ("classify", "review")
    assert verb_object("把下面这句话翻译成英文。") == ("翻译", "话")
    assert verb_object("") is None


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_report_renders_in_headless_chromium(fault_server, tmp_path):
    fault_server.responder = scripted()
    config = write_config(tmp_path, fault_server.url)
    assert invoke("run", config).exit_code == 0
    report = tmp_path / "outputs" / "t" / "report.html"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1280,3000",
    ]
    shot = tmp_path / "shot.png"
    done = subprocess.run(
        ["chromium", *flags, f"--screenshot={shot}", report.as_uri()], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
    dom = subprocess.run(
        ["chromium", *flags, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120
    )
    assert dom.returncode == 0 and dom.stdout.count('src="data:image/png;base64,') >= 4
    assert "Uncaught" not in dom.stderr
    for panel in ("rejected-examples", "kept-examples", "classifier", "verbs", "side-by-side"):  # the curation panels
        assert f'<section id="{panel}">' in dom.stdout, panel
    assert "classifier_agreement.rate" in dom.stdout and 'alt="root verbs and objects"' in dom.stdout
    assert dom.stdout.count('class="sample"') == min(
        3, json.loads((report.parent / "manifest.json").read_text())["stages"]["self_instruct"]["kept"]
    )


def test_multiturn_stage_feeds_the_filter_with_conversations(fault_server, tmp_path):
    from tests.generate.test_multiturn import scripted as scripted_dialogues

    fault_server.responder = scripted_dialogues()
    config = write_config(
        tmp_path,
        fault_server.url,
        self_instruct=None,
        self_instruct_multiturn={"seeds": "seeds/seed_dialogues.jsonl", "num_conversations": 4, "batch_size": 2},
        filter={},
    )
    result = invoke("run", config)
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "outputs" / "t"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert list(manifest["stages"]) == ["self_instruct_multiturn", "filter"]
    generated = manifest["stages"]["self_instruct_multiturn"]["outputs"]["records.jsonl"]["records"]
    assert generated >= 4
    curated = [json.loads(line) for line in (run_dir / "filter" / "curated.jsonl").read_text().splitlines()]
    rejects = (run_dir / "filter" / "rejects.jsonl").read_text().splitlines()
    assert len(curated) + len(rejects) == generated and curated
    for row in curated:
        roles = [m["role"] for m in row["messages"] if m["role"] != "system"]
        assert roles.count("user") >= 2 and roles == ["user", "assistant"] * (len(roles) // 2)
        assert row["meta"]["method"] == "self-instruct-multiturn"
