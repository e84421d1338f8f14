"""The ``datagen`` command line: one thin command per stage, no logic.

Each command parses options, builds its stage's config, calls one function and prints a one-line summary.
Errors the user can fix (bad flags, config, input files) exit with code 2 and a message naming the file
and line or the key; other failures exit 1. ``DATAGEN_DEBUG=1`` shows tracebacks of unexpected errors.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

import click

from datagen import __version__
from datagen.errors import DatagenError
from datagen.redaction import RedactingFilter, redact_text

#: --batch values; the same as datagen.llm.client.BATCH_MODES, not imported so that `datagen --help` stays fast.
BATCH_CHOICES = ("off", "on", "auto", "file")

log = logging.getLogger("datagen")


class FiniteFloat(click.FloatRange):
    """``click.FloatRange`` that also refuses ``inf`` and ``nan`` (which pass any range check: every comparison
    with nan is false), so ``--temperature nan`` is a usage error (exit 2) before anything is paid for."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if number is not None and not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


class _Group(click.Group):
    """Maps DatagenError to its exit code and a one-line message, for every subcommand."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # click cuts summaries to fit one line ("..."); wrap the whole first sentence instead.
        rows = [(name, self.get_command(ctx, name).get_short_help_str(limit=200)) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):  # the root group, the only one of this class, always has commands
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DatagenError as exc:
            click.echo(f"{exc.label}: {redact_text(str(exc))}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted; re-run the same command to resume", err=True)
            ctx.exit(130)


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s" if verbose else "%(message)s"))
    handler.addFilter(RedactingFilter())  # no URL credential or API key reaches a log line
    root = logging.getLogger("datagen")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    for noisy in ("httpx", "openai", "urllib3"):  # their debug logs include request headers
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _quiet_libraries(verbose)


#: Libraries whose warnings and chatter say nothing a user can act on (bitsandbytes' "Failed to load CPU
#: gemm_4bit_forward" on every filter run, transformers' generation notices, FutureWarnings of their own APIs).
_LIBRARIES = (
    "bitsandbytes",
    "transformers",
    "sentence_transformers",
    "huggingface_hub",
    "datasets",
    "accelerate",
    "peft",
    "trl",
    "torch",
    "kernels",
    "filelock",
    "matplotlib",
    "PIL",
    "faiss",
)
_VERBOSITY_VARS = ("TRANSFORMERS_VERBOSITY", "HF_HUB_VERBOSITY", "DATASETS_VERBOSITY")
_QUIET_ENV = {
    **dict.fromkeys(_VERBOSITY_VARS, "error"),
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}  # + "Loading weights" bars


def _quiet_libraries(verbose: int) -> None:
    """The one place library noise is silenced: errors still show, everything shows with -v.

    Only other packages' loggers and warnings are touched: a warning raised in datagen's own modules, or
    logged under ``datagen.*``, is never hidden. The verbosity variables reach child processes (the
    embedded server) and libraries imported later, which reset their logger level on import.
    """
    import warnings

    for name in _LIBRARIES:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.ERROR)
    foreign = r"(?!datagen(\.|$))"  # any module but ours
    libraries = r"(" + "|".join(_LIBRARIES) + r")(\.|$)"
    if verbose:
        for var, value in _QUIET_ENV.items():
            if os.environ.get(var) == value:
                del os.environ[var]
        for category in (FutureWarning, DeprecationWarning, UserWarning):
            warnings.filterwarnings("default", category=category)
        return
    for var, value in _QUIET_ENV.items():
        os.environ.setdefault(var, value)
    for category, module in ((FutureWarning, foreign), (DeprecationWarning, foreign), (UserWarning, libraries)):
        warnings.filterwarnings("ignore", category=category, module=module)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="datagen")
@click.option("-v", "--verbose", count=True, help="More logging (-v: debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
def cli(verbose: int, quiet: bool) -> None:
    """Turn a little human input into curated instruction-tuning data and a fine-tuned model.

    \b
    Quick start (the embedded model, no API key needed):
      datagen serve &                                   # OpenAI-compatible server on 127.0.0.1:8000
      datagen respond --in prompts.jsonl --out out/ --base-url http://127.0.0.1:8000/v1
    """
    _setup_logging(verbose, quiet)


#: Config dataclasses of commands that are no stage of a run (those are in ``datagen.stages``), by class name.
_CONFIGS = (
    "datagen.llm.types:LLMConfig",
    "datagen.llm.server:ServeConfig",
    "datagen.generate.respond:RespondConfig",
    "datagen.generate.classify:ClassifyConfig",
)


def config_class(name: str) -> type:
    """A config dataclass by its name: a stage's (read from the stage table) or one of ``_CONFIGS``."""
    import importlib

    from datagen.stages import STAGES

    path = next(p for p in (*_CONFIGS, *(stage.config for stage in STAGES)) if p.endswith(f":{name}"))
    module, _, cls = path.partition(":")
    return getattr(importlib.import_module(module), cls)


class ConfigOption(click.Option):
    """An option that sets field ``field`` (default: its name; ``sampling.max_tokens`` for a nested one) of config
    class ``config``. Its default is "not given" (None) and the dataclass fills it in: a default lives once, so the
    command line cannot drift from a run config. ``--help`` shows the dataclass's, read only when help is shown."""

    def __init__(self, *decls: str, config: str, field: str | None = None, **attrs: Any) -> None:
        super().__init__(*decls, default=None, show_default=True, **attrs)
        self.config, self.field = config, field or self.name

    def config_default(self) -> Any:
        from datagen.config import field_default

        return field_default(config_class(self.config), self.field)

    def get_help_extra(self, ctx: click.Context) -> Any:
        self.default = self.config_default()
        try:
            return super().get_help_extra(ctx)
        finally:
            self.default = None


def option(*decls: str, config: str, **attrs: Any) -> Any:
    return click.option(*decls, cls=ConfigOption, config=config, **attrs)


def _options(*options: Any) -> Any:
    """One decorator applying ``options`` (click decorators) in the order given, as stacked ``@`` lines would."""
    return lambda fn: functools.reduce(lambda f, option: option(f), reversed(options), fn)


def configure(config: str, given: dict[str, Any], **fixed: Any) -> Any:
    """The ``config`` dataclass from the options the user gave (the rest keep the dataclass defaults) and
    ``fixed`` fields; a nested field (``sampling.max_tokens``) updates that field's own default."""
    import dataclasses

    from datagen.config import field_default

    cls, values = config_class(config), dict(fixed)
    for param in click.get_current_context().command.params:
        if isinstance(param, ConfigOption) and param.config == config and given.get(param.name) is not None:
            head, _, rest = param.field.partition(".")
            if rest:
                values[head] = dataclasses.replace(
                    values.get(head) or field_default(cls, head), **{rest: given[param.name]}
                )
            else:
                values[head] = given[param.name]
    return cls(**values)


def llm_options(fn):
    """The endpoint options every LLM-calling command shares (keys come from the environment only)."""
    return _options(
        click.option(
            "--base-url",
            "base_urls",
            multiple=True,
            metavar="URL",
            help="OpenAI-compatible base URL; repeat to load-balance. Default: $DATAGEN_BASE_URL or "
            "$OPENAI_BASE_URL. 'embedded' starts the bundled model for this command.",
        ),
        option("--model", config="LLMConfig", help="Model name. Default: the first model the endpoint lists."),
        option("--concurrency", config="LLMConfig", type=click.IntRange(min=1), help="Requests in flight at once."),
        option(
            "--timeout",
            config="LLMConfig",
            type=FiniteFloat(min=0, min_open=True),
            help="Seconds per request attempt.",
        ),
        option(
            "--max-retries",
            config="LLMConfig",
            type=click.IntRange(min=0),
            help="Retries on 408/409/429/5xx, timeouts and connection errors.",
        ),
        option("--rpm", config="LLMConfig", type=FiniteFloat(min=0, min_open=True), help="Requests-per-minute limit."),
        option("--tpm", config="LLMConfig", type=FiniteFloat(min=0, min_open=True), help="Tokens-per-minute limit."),
        click.option(
            "--no-cache",
            is_flag=True,
            default=None,  # None: not given (filter: the YAML's llm.cache)
            help="Do not replay or store answers in the on-disk cache.",
        ),
        option(
            "--cache-path",
            config="LLMConfig",
            type=click.Path(dir_okay=False, path_type=Path),
            help="SQLite answer cache. Default: $DATAGEN_HOME/llm_cache.sqlite.",
        ),
        option(
            "--circuit-breaker",
            config="LLMConfig",
            type=FiniteFloat(min=0, min_open=True),
            help="Stop after this many seconds of nothing but failures.",
        ),
        option(
            "--processes",
            config="LLMConfig",
            type=click.IntRange(min=1),
            help="Send requests from this many child processes: for hundreds of requests/s, where "
            "one event loop running the openai SDK runs out of CPU.",
        ),
        option(
            "--batch",
            config="LLMConfig",
            type=click.Choice(BATCH_CHOICES),
            is_flag=False,
            flag_value="on",
            help="Send requests as batch jobs (OpenAI Batch API: half the price, no rate limits): "
            "--batch, --batch=auto (online where the endpoint has no /batches) or --batch=file "
            "(write them to --batch-file for another engine, then `datagen batch import`).",
        ),
        option(
            "--batch-file",
            config="LLMConfig",
            type=click.Path(dir_okay=False, path_type=Path),
            help="--batch=file: where the pending requests are written. Default: batch_requests.jsonl.",
        ),
        click.option(
            "--prices",
            "prices_file",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            default=None,
            help="YAML price table, model: {input: USD, output: USD} per million tokens "
            "('*' for any model): costs in stats.json, and what --max-cost counts.",
        ),
        option(
            "--max-cost",
            config="LLMConfig",
            type=click.FloatRange(min=0, min_open=True),
            metavar="USD",
            help="Stop before a request would take spending past this (needs --prices). Answers "
            "received are cached: the same command with a higher limit goes on from there.",
        ),
    )(fn)


def sampling_options(config: str) -> Any:
    """``--temperature --top-p --max-tokens --seed``, setting the ``sampling`` field of ``config``."""
    return _options(
        option("--temperature", config=config, field="sampling.temperature", type=FiniteFloat(min=0)),
        option("--top-p", config=config, field="sampling.top_p", type=FiniteFloat(min=0, max=1, min_open=True)),
        option("--max-tokens", config=config, field="sampling.max_tokens", type=click.IntRange(min=1)),
        option("--seed", config=config, field="sampling.seed", type=int, help="Sampling seed sent to the endpoint."),
    )


def run_llm_stage(
    generate: Any, config: str, given: dict[str, Any], uses_llm: Any = lambda cfg: True, **fixed: Any
) -> dict[str, Any]:
    """Run ``generate(cfg)`` on the ``config`` dataclass the options built; when ``uses_llm(cfg)``, with the
    endpoint of ``llm_options`` (``--base-url embedded`` started for the command and stopped after)."""
    import dataclasses

    from datagen.config import load_yaml
    from datagen.llm.endpoint import endpoint

    cfg = configure(config, given, **fixed)
    if not uses_llm(cfg):
        return asyncio.run(generate(cfg))
    prices = load_yaml(given["prices_file"]) if given["prices_file"] is not None else {}
    llm = configure("LLMConfig", given, base_urls=given["base_urls"], cache=not given["no_cache"], prices=prices)
    with endpoint(llm) as llm_cfg:
        return asyncio.run(generate(dataclasses.replace(cfg, llm=llm_cfg)))


def _calls(stats: dict[str, Any]) -> str:
    return f"{stats['llm']['succeeded']} calls, {stats['llm']['cached']} from cache"


# ---------------------------------------------------------------------------------------------- commands


@cli.command("serve")
@option(
    "--model", config="ServeConfig", help="HF model folder or .gguf file. Default: embedded SmolLM2-135M-Instruct."
)
@option(
    "--adapter",
    config="ServeConfig",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="LoRA adapter folder to serve on top of the model (serve a tuned model).",
)
@option("--host", config="ServeConfig", help="Interface to bind; 0.0.0.0 exposes it.")
@option("--port", config="ServeConfig", type=click.IntRange(0, 65535), help="0 picks a free port.")
@option(
    "--api-key",
    config="ServeConfig",
    envvar="DATAGEN_SERVE_API_KEY",
    help="Require this bearer key (prefer the env var DATAGEN_SERVE_API_KEY).",
)
@option(
    "--served-model-name",
    config="ServeConfig",
    help="Model id clients must use. Default: NAME@DIGEST of the weights (+adapter@DIGEST), so client "
    "caches keyed by model id never mix models.",
)
@option(
    "--max-batch-size",
    config="ServeConfig",
    type=click.IntRange(min=1),
    help="Concurrent requests gathered into one generate call.",
)
@option("--max-request-bytes", config="ServeConfig", type=click.IntRange(min=1))
@option(
    "--device", config="ServeConfig", help="auto (CUDA in bf16 when available, else CPU), cpu, mps, cuda or cuda:N."
)
@click.option(
    "--url-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the base URL here once healthy (for scripts that start it on port 0).",
)
@option(
    "--max-choices",
    config="ServeConfig",
    type=click.IntRange(1, 4096),
    help="Most completions (n x prompts) one request may ask for.",
)
@option(
    "--client-timeout",
    config="ServeConfig",
    type=click.FloatRange(min=0, min_open=True, max=3600),
    help="Seconds a client may take to send its headers, and again its body.",
)
@click.option(
    "--allow-host",
    "allow_hosts",
    multiple=True,
    help="Without an API key only loopback Host/Origin are served; also accept this name ('*': any).",
)
def serve_cmd(url_file, allow_hosts, **given):
    """Serve a local model as an OpenAI-compatible endpoint.

    Endpoints: /v1/chat/completions and /v1/completions (stream: true for SSE), /v1/embeddings, /v1/models,
    /health. Without an API key only loopback Host/Origin are served (--allow-host adds names).

    \b
    Example:  datagen serve --port 8000
              datagen serve --model outputs/run/merged --port 8001
    """
    from datagen.llm.server import run_server

    run_server(configure("ServeConfig", given, allowed_hosts=tuple(allow_hosts)), url_file=url_file)


@cli.command("respond")
@click.option(
    "--in",
    "inputs",
    type=click.Path(path_type=Path),
    required=True,
    help="Records in any format (alpaca, sharegpt, messages, seed, datagen).",
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output folder.")
@option("--system", config="RespondConfig", help="System message to put before each conversation.")
@llm_options
@sampling_options("RespondConfig")
def respond_cmd(inputs, out, **given):
    """Answer every prompt in a file with an LLM.

    Resumable: re-run the same command to continue.

    Writes OUT/responses.jsonl, OUT/rejects.jsonl (failed or truncated answers, with reasons) and
    OUT/stats.json. Useful to re-answer instructions with a stronger model.

    \b
    Example:  datagen respond --in curated.jsonl --out answers/ --base-url http://127.0.0.1:8000/v1
    """
    from datagen.generate.respond import respond

    stats = run_llm_stage(respond, "RespondConfig", given, inputs=inputs, out=out)
    click.echo(
        f"wrote {stats['kept']} responses to {out / 'responses.jsonl'}, {stats['rejected']} rejected ({_calls(stats)})"
    )


# ---- generator commands: self-instruct ----


@cli.command("self-instruct")
@click.option("--seeds", type=click.Path(path_type=Path), required=True, help="Seed tasks (self-instruct JSONL).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output folder.")
@option(
    "--num-instructions", config="SelfInstructConfig", type=click.IntRange(min=1), help="New instructions to generate."
)
@option("--lang", config="SelfInstructConfig", type=click.Choice(["en", "zh"]))
@option(
    "--style",
    config="SelfInstructConfig",
    type=click.Choice(["completion", "chat"]),
    help="completion: the model continues a numbered list (/v1/completions; best for small models). "
    "chat: ask an instruction-following model.",
)
@option(
    "--batch-size",
    config="SelfInstructConfig",
    type=click.IntRange(min=1),
    help="Bootstrap requests in flight per round.",
)
@option("--num-prompt-instructions", config="SelfInstructConfig", type=click.IntRange(min=1))
@option("--num-machine-in-prompt", config="SelfInstructConfig", type=click.IntRange(min=0))
@option("--rouge-threshold", config="SelfInstructConfig", type=FiniteFloat(0, 1, min_open=True))
@option("--max-instances", config="SelfInstructConfig", type=click.IntRange(min=1))
@option(
    "--max-rounds", config="SelfInstructConfig", type=click.IntRange(min=1), help="Default: 4× the minimum needed."
)
@option("--seed", config="SelfInstructConfig", type=int, help="RNG seed for in-context sampling.")
@llm_options
def self_instruct_cmd(seeds, out, **given):
    """Bootstrap new instructions from seed tasks (Self-Instruct).

    Classification tasks get output-first instances, the rest input-first. Resumable.

    \b
    Example:  datagen self-instruct --seeds seeds/seed_tasks.jsonl --num-instructions 30 \\
                  --out outputs/si --base-url embedded
    """
    from datagen.generate.self_instruct import generate

    stats = run_llm_stage(generate, "SelfInstructConfig", given, seeds=seeds, out=out)
    agreement = stats.get("classifier_agreement")
    click.echo(
        f"wrote {stats['kept']} records from {stats['machine_instructions']} new instructions to "
        f"{out / 'records.jsonl'}; {stats['rejected']} rejected ({_calls(stats)})"
        + (
            f"; classifier agrees with {agreement['agree']}/{agreement['evaluated']} labelled seeds (leave-one-out)"
            if agreement
            else ""
        )
    )


@cli.command("self-instruct-multiturn")
@click.option(
    "--seeds",
    type=click.Path(path_type=Path),
    required=True,
    help="Seed conversations (JSONL of OpenAI messages or sharegpt conversations).",
)
@option(
    "--num-conversations",
    config="MultiTurnConfig",
    type=click.IntRange(min=1),
    help="Conversations to keep, each with at least 2 user turns.",
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output folder.")
@option("--lang", config="MultiTurnConfig", type=click.Choice(["en", "zh"]))
@option(
    "--min-turns",
    config="MultiTurnConfig",
    type=click.IntRange(min=2),
    help="Fewest user turns a conversation is planned with.",
)
@option(
    "--max-turns",
    config="MultiTurnConfig",
    type=click.IntRange(min=2),
    help="Most user turns; each conversation draws its count from [min, max].",
)
@option(
    "--style",
    config="MultiTurnConfig",
    type=click.Choice(["completion", "chat"]),
    help="completion: openers continue a numbered list and the simulated user continues a transcript "
    "(/v1/completions; best for small models). chat: ask an instruction-following model.",
)
@option(
    "--batch-size",
    config="MultiTurnConfig",
    type=click.IntRange(min=1),
    help="Opener requests in flight per bootstrap round.",
)
@option(
    "--seed",
    config="MultiTurnConfig",
    type=int,
    help="RNG seed: in-context sampling, turn counts and follow-up kinds.",
)
@llm_options
def self_instruct_multiturn_cmd(seeds, out, **given):
    """Grow multi-turn conversations from seed dialogues (multi-turn Self-Instruct).

    New first turns are bootstrapped from the seeds' first turns; the LLM then answers, plays the user with a
    follow-up, and answers again. Failed turns cut a conversation back (kept with >= 2 user turns). Resumable.
    Writes OUT/records.jsonl (with messages), OUT/rejects.jsonl and OUT/stats.json.

    \b
    Example:  datagen self-instruct-multiturn --seeds seeds/seed_dialogues.jsonl --num-conversations 10 \\
                  --out outputs/mt --base-url embedded
    """
    from datagen.generate.multiturn import generate

    stats = run_llm_stage(generate, "MultiTurnConfig", given, seeds=seeds, out=out)
    click.echo(
        f"wrote {stats['kept']} conversations (user turns: {stats['turns']}) to {out / 'records.jsonl'}; "
        f"{stats['rejected']} rejected ({_calls(stats)})"
    )


# ---- generator commands: self-qa ----


@cli.command("self-qa")
@click.option(
    "--docs",
    required=True,
    metavar="DIR_OR_GLOB",
    help="Folder (walked recursively), file or glob of .txt .md .html .jsonl .csv .tsv .pdf documents.",
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output folder.")
@option(
    "--questions-per-chunk",
    config="SelfQAConfig",
    type=click.IntRange(1, 20),
    help="Questions asked for, and kept at most, per chunk.",
)
@option(
    "--chunk-tokens",
    config="SelfQAConfig",
    type=click.IntRange(min=16),
    help="Chunk size in tokens (words; a CJK character counts as one).",
)
@option(
    "--chunk-overlap", config="SelfQAConfig", type=click.IntRange(min=0), help="Tokens consecutive chunks may share."
)
@option(
    "--lang",
    config="SelfQAConfig",
    type=click.Choice(["auto", "en", "zh"]),
    help="Prompt language; auto picks it per chunk.",
)
@option(
    "--max-chunks",
    config="SelfQAConfig",
    type=click.IntRange(min=1),
    help="Use at most this many chunks, round-robin over documents.",
)
@option(
    "--min-support",
    config="SelfQAConfig",
    type=FiniteFloat(0, 1),
    help="Drop answers with a smaller share of content words found in their chunk.",
)
@option("--text-field", config="SelfQAConfig", help="Field holding the text in .jsonl documents.")
@llm_options
@sampling_options("SelfQAConfig")
def self_qa_cmd(docs, out, **given):
    """Generate question-answer pairs grounded in documents (Self-QA).

    Resumable: re-run the same command to continue. Writes OUT/records.jsonl, OUT/rejects.jsonl (with
    reasons) and OUT/stats.json; --max-tokens bounds each answer.

    \b
    Example:  datagen self-qa --docs seeds/docs --out gen/qa --base-url embedded \\
                --max-chunks 18 --temperature 0.3 --max-tokens 160
    """
    from datagen.generate.self_qa import generate

    stats = run_llm_stage(generate, "SelfQAConfig", given, docs=docs, out=out)
    click.echo(
        f"wrote {stats['kept']} records from {stats['documents']} documents to {out / 'records.jsonl'}, "
        f"{stats['rejected']} rejected ({_calls(stats)})"
    )


# ---- generator commands: self-kg ----


@cli.command("self-kg")
@click.option(
    "--graph",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="Triples (.tsv/.csv/.jsonl: head, relation, tail) or a graph (.graphml/.gml/.json node-link).",
)
@option("--num", config="SelfKGConfig", type=click.IntRange(min=1), help="Samples to draw.")
@option(
    "--mode",
    config="SelfKGConfig",
    type=click.Choice(["template", "llm"]),
    help="template: fixed phrasings, no LLM; llm: the LLM phrases the facts (grounding-checked).",
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output folder.")
@option(
    "--labels",
    config="SelfKGConfig",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Display labels: id<TAB>label rows, or a header such as id<TAB>label_zh.",
)
@option("--lang", config="SelfKGConfig", type=click.Choice(["en", "zh"]))
@option(
    "--skip-bad-rows", config="SelfKGConfig", is_flag=True, help="Skip and count bad input rows instead of stopping."
)
@option(
    "--dangling",
    config="SelfKGConfig",
    type=click.Choice(["drop", "add", "error"]),
    help="Edges to nodes the file never declares (GraphML, GML, node-link).",
)
@option("--keep-self-loops", config="SelfKGConfig", is_flag=True, help="Keep head == tail facts (dropped by default).")
@llm_options
@sampling_options("SelfKGConfig")
def self_kg_cmd(graph, out, **given):
    """Generate question-answer pairs from a knowledge graph (Self-KG).

    Samples entity neighbourhoods, single facts, 2-hop paths and comparisons, least-used parts of the graph
    first; --seed seeds this sampling (default 0) and, in llm mode, the endpoint too. LLM options apply to
    --mode llm only. Resumable: re-run the same command.

    Writes OUT/records.jsonl, OUT/rejects.jsonl (with reasons) and OUT/stats.json (graph, coverage, rejects).

    \b
    Example:  datagen self-kg --graph seeds/kg/plants.tsv --num 50 --mode template --out gen/kg
              datagen self-kg --graph seeds/kg/plants.tsv --labels seeds/kg/labels.zh.tsv --lang zh \\
                  --num 20 --mode llm --base-url embedded --out gen/kg-zh
    """
    from datagen.generate.self_kg import generate

    seed = {"seed": given["seed"]} if given["seed"] is not None else {}  # --seed: graph sampling too
    stats = run_llm_stage(generate, "SelfKGConfig", given, lambda cfg: cfg.mode == "llm", graph=graph, out=out, **seed)
    coverage = stats["coverage"]
    click.echo(
        f"wrote {stats['kept']} records to {out / 'records.jsonl'}, {stats['rejected']} rejected; "
        f"covered {coverage['entities']['share']:.0%} of entities, {coverage['relations']['share']:.0%} "
        f"of relations"
    )


@cli.command("filter")
@click.argument("inputs", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output folder (or 'out' in --config).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="filter.yaml with any FilterConfig key; flags given here override it.",
)
@option("--heuristics/--no-heuristics", config="FilterConfig", help="Stage 1: named rules.")
@option("--exact-dedup/--no-exact-dedup", config="FilterConfig", help="Stage 2: same prompt.")
@option("--rouge-dedup/--no-rouge-dedup", config="FilterConfig", help="Stage 3: ROUGE-L near-dups.")
@option("--embed-dedup/--no-embed-dedup", config="FilterConfig", help="Stage 4: embedding near-dups.")
@option("--judge/--no-judge", config="FilterConfig", help="Stage 5: LLM judge (needs --base-url).")
@option(
    "--keep",
    config="FilterConfig",
    type=click.Choice(["first", "longest_output", "heuristic_score"]),
    help="Which record of a duplicate group survives.",
)
@option("--rouge-threshold", config="FilterConfig", type=FiniteFloat(0, 1, min_open=True))
@option(
    "--embed-threshold",
    config="FilterConfig",
    type=FiniteFloat(0, 1, min_open=True),
    help="Cosine at or above which two instructions are duplicates.",
)
@option(
    "--embed-model", config="FilterConfig", help="sentence-transformers folder. Default: bundled all-MiniLM-L6-v2."
)
@option("--judge-min-score", config="FilterConfig", type=click.IntRange(1, 5))
@click.option(
    "--against",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="Earlier dataset(s): drop records that near-duplicate them (repeat the option for several).",
)
@llm_options
def filter_cmd(config_path, **options):
    """Filter records: heuristics, exact dedup, ROUGE-L and embedding near-dups, optional LLM judge.

    Writes OUT/curated.jsonl, OUT/rejects.jsonl (each with reject.stage/reason) and OUT/filter_stats.json.

    \b
    Example:  datagen filter outputs/si/records.jsonl --out outputs/filter
              datagen filter a.jsonl b.jsonl --out f/ --keep longest_output --no-embed-dedup
              datagen filter gen.jsonl --out f/ --judge --base-url embedded
    """
    from datagen.filter.config import load_config
    from datagen.filter.pipeline import run_filter

    given = {k: v for k, v in options.items() if v not in (None, ())}  # what the user gave: the rest defaults to None
    stats = asyncio.run(run_filter(load_config(config_path, **given)))
    click.echo(
        f"kept {stats['curated']} of {stats['records_in']} records in {stats['out']}/curated.jsonl; "
        f"{stats['rejected']} rejected {stats['rejects_by_stage'] or ''}".rstrip()
    )


# ---- filter / train / eval / merge commands ----


@cli.command("train")
@click.option(
    "--data",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    help="Training records in any format (alpaca, sharegpt, messages, seed, datagen, HF folder/parquet).",
)
@option(
    "--base",
    config="TrainConfig",
    help="Base model: 'embedded' (SmolLM2-135M-Instruct), a .gguf file or an HF model folder.",
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output folder.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="YAML file of train settings (see datagen/train/config.py); key=value arguments override it.",
)
@click.option(
    "--debug-labels",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Print N training rows with the trained tokens highlighted, then train.",
)
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
def train_cmd(data, base, out, config_path, debug_labels, overrides):
    """Fine-tune a LoRA (or QLoRA) adapter on DATA.

    Settings: dataclass defaults < --config YAML < KEY=VALUE arguments < --base. Re-run the same command to
    resume from the last checkpoint. Writes OUT/adapter, OUT/train_summary.json, OUT/loss_curve.png, and
    OUT/eval.jsonl (the held-out records).

    \b
    Example:  datagen train --data curated.jsonl --out outputs/sft max_steps=30 learning_rate=1e-3
              datagen train --data chat.jsonl --out sft/ --config train.yaml packing=true load_in_4bit=true
    """
    from datagen.train.config import load_train_config
    from datagen.train.distributed import is_main_process
    from datagen.train.sft import train

    cfg = load_train_config(config_path, overrides, {"base": base})
    s = train(data, out, cfg, debug_labels=debug_labels, echo=click.echo)
    if not is_main_process():  # under torchrun / accelerate launch, rank 0 speaks for every rank
        return
    before, after = s["eval_loss_before"], s["eval_loss_after"]
    loss = f"; eval loss {before:.4f} -> {after:.4f}" if before is not None and after is not None else ""
    click.echo(
        f"trained {s['global_step']} steps on {s['data_stats']['rows']} rows ({s['dropped_rows']} dropped), "
        f"{s['trainable_params']:,} trainable parameters{loss}; adapter in {s['adapter']}"
    )


@cli.command("eval")
@option(
    "--base", config="EvalConfig", help="Base model. Default: the one the adapter was trained on, else 'embedded'."
)
@option(
    "--adapter",
    config="EvalConfig",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="LoRA adapter folder (OUT/adapter of datagen train); without it only the base is scored.",
)
@click.option(
    "--data",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    help="Held-out records (e.g. OUT/eval.jsonl of datagen train); the last reply is the reference.",
)
@option("--max-samples", config="EvalConfig", type=click.IntRange(min=1))
@option("--max-new-tokens", config="EvalConfig", type=click.IntRange(min=1))
@option("--batch-size", config="EvalConfig", type=click.IntRange(min=1))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output folder.")
def eval_cmd(data, out, **given):
    """Score the base and the tuned model: ROUGE-1/2/L, loss, perplexity.

    Greedy answers side by side (base | tuned | reference) go to OUT/samples.md and OUT/samples.jsonl,
    scores to OUT/eval.json.

    \b
    Example:  datagen eval --adapter outputs/sft/adapter --data outputs/sft/eval.jsonl --out outputs/sft/eval
    """
    from datagen.train.distributed import is_main_process
    from datagen.train.evaluate import evaluate

    r = evaluate(data, out, configure("EvalConfig", given))
    if not is_main_process():  # under torchrun, rank 0 speaks for every rank
        return
    line = f"base ROUGE-L F {r['base']['rougeL']['fmeasure']:.4f}, loss {r['base']['loss']:.4f}"
    if given["adapter"]:
        line += f"; tuned ROUGE-L F {r['tuned']['rougeL']['fmeasure']:.4f}, loss {r['tuned']['loss']:.4f}"
    click.echo(f"scored {r['samples']} samples: {line}; wrote {out / 'eval.json'}")


@cli.command("merge")
@click.option("--base", default=None, help="Base model. Default: the one the adapter was trained on, else 'embedded'.")
@click.option(
    "--adapter",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="LoRA adapter folder (OUT/adapter of datagen train).",
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Merged model folder.")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default="float32", show_default=True)
def merge_cmd(base, adapter, out, dtype):
    """Merge a LoRA adapter into its full-precision base and save a plain HF model folder.

    \b
    Example:  datagen merge --adapter outputs/sft/adapter --out outputs/sft/merged
              datagen serve --model outputs/sft/merged
    """
    from datagen.train.merge import merge

    path = merge(adapter, out, base=base, dtype=dtype)
    click.echo(f"merged {adapter} into {path}")


# ---- pipeline commands: run / inspect / export ----


@cli.command("run")
@click.argument("config", type=click.Path(path_type=Path))
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
@click.option(
    "--resume",
    is_flag=True,
    help="Continue an existing run: finished stages are skipped, "
    "unfinished ones resume from their state and the LLM cache.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Estimate requests, tokens and cost per stage (ceilings, with the "
    "config's prices) and exit: nothing is sent or written.",
)
def run_cmd(config: Path, overrides: tuple[str, ...], resume: bool, dry_run: bool) -> None:
    """Run the stages a YAML config names, then write manifest.json and report.html.

    \b
    Example:  datagen run configs/seeds-to-sft.yaml --resume
              datagen run configs/seeds-to-sft.yaml self_instruct.num_instructions=10 name=small
              datagen run configs/seeds-to-sft.yaml --dry-run self_instruct.num_instructions=50000
    """
    from datagen.run import run_pipeline

    if dry_run:
        from datagen.estimate import estimate_run, render_table
        from datagen.run import load_plan

        plan = load_plan(config, overrides)
        click.echo(render_table(estimate_run(plan.stages, plan.llm)))
        return

    manifest = run_pipeline(config, overrides, resume=resume)
    ran = [n for n, s in manifest["stages"].items() if not s.get("skipped")]
    run_dir = Path(manifest["config"].get("out_dir") or "outputs") / manifest["name"]
    click.echo(
        f"run {manifest['name']}: {len(ran)} stage(s) ran, {len(manifest['stages']) - len(ran)} skipped; "
        f"results in {run_dir}/ (manifest.json, report.html)"
    )


@cli.command("inspect")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--samples", type=click.IntRange(min=0), default=3, show_default=True, help="Random records to show.")
def inspect_cmd(path: Path, samples: int) -> None:
    """Summarise a dataset file: counts, lengths, methods, languages, samples.

    \b
    Example:  datagen inspect outputs/seeds-to-sft/filter/curated.jsonl
    """
    from datagen.inspect import render, summarize

    click.echo(render(summarize(path, samples=samples)))


def _export_options(fn: Any) -> Any:
    """Options ``export`` and ``convert`` share."""
    from datagen.formats import EXPORT_FORMATS

    return _options(
        click.option(
            "--to",
            "to",
            required=True,
            type=click.Choice(list(EXPORT_FORMATS)),
            help="Output format; 'hf' writes a dataset folder (load_dataset, load_from_disk, LLaMA-Factory).",
        ),
        click.option(
            "--overwrite", is_flag=True, help="Replace an existing DEST (never one holding the input or a run)."
        ),
        click.option(
            "--meta",
            type=click.Choice(["struct", "drop"]),
            default="struct",
            show_default=True,
            help="hf/parquet: keep meta as a typed struct column, or leave it out.",
        ),
        click.option(
            "--tokenizer",
            default=None,
            help="--to text: model folder whose chat template renders each "
            "conversation (default: the embedded SmolLM2).",
        ),
        click.option("--license", "license_", default=None, help="--to hf: license in the dataset card."),
    )(fn)


def _export(examples: list[Any], dest: Path, to: str, tokenizer: str | None, origin: str = "", **options: Any) -> None:
    """``formats.export`` (``--to text``: rendered with ``tokenizer``'s chat template), then one line saying what
    was written and, on stderr, what the format could not hold."""
    from datagen.formats import export

    chat_template = None
    if to == "text":
        from transformers import AutoTokenizer

        from datagen.llm.local import resolve_model_dir

        tok = AutoTokenizer.from_pretrained(resolve_model_dir(tokenizer))
        chat_template = functools.partial(tok.apply_chat_template, tokenize=False)
    result = export(examples, dest, to, chat_template=chat_template, **options)
    click.echo(
        f"wrote {result.rows} {'tasks' if to == 'seed' else 'pairs' if to == 'preference' else 'records'}"
        f"{origin} to {dest} ({to})"
    )
    if result.dropped:
        click.echo(result.notes(), err=True)


@cli.command("export")
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("dest", type=click.Path(path_type=Path))
@_export_options
def export_cmd(
    run: Path, dest: Path, to: str, overwrite: bool, meta: str, tokenizer: str | None, license_: str | None
) -> None:
    """Export a run's curated data (or its generated records when it has no filter stage).

    An existing DEST is refused unless --overwrite; what a format cannot hold is listed on stderr.

    \b
    Example:  datagen export outputs/seeds-to-sft out/ds --to hf
              datagen export outputs/seeds-to-sft chat.jsonl --to sharegpt
              datagen export outputs/seeds-to-sft pairs.jsonl --to preference
    """
    from datagen.errors import ConfigError
    from datagen.formats import read_any
    from datagen.report import dataset_card

    curated = run / "filter" / "curated.jsonl"
    sources = [curated] if curated.exists() else sorted(run.glob("*/records.jsonl"))
    if not sources:
        raise ConfigError(f"{run}: no filter/curated.jsonl or */records.jsonl; is it a `datagen run` output folder?")
    examples = [e for source in sources for e in read_any(source)]
    rejects = run / "filter" / "rejects.jsonl"
    rejected = read_any(rejects) if to == "preference" and rejects.exists() else []
    _export(
        examples,
        dest,
        to,
        tokenizer,
        f" from {len(sources)} file(s)",
        overwrite=overwrite,
        protect=[run, *sources],
        rejected=rejected,
        meta=meta,
        card={**dataset_card(run), "license": license_},
    )


@cli.command("convert")
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("dest", type=click.Path(path_type=Path))
@_export_options
@click.option(
    "--rejected",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="--to preference: the rejected records (a filter's rejects.jsonl).",
)
def convert_cmd(
    source: Path,
    dest: Path,
    to: str,
    overwrite: bool,
    meta: str,
    tokenizer: str | None,
    license_: str | None,
    rejected: Path | None,
) -> None:
    """Convert records between formats.

    The input format is detected per line. An existing DEST is refused unless --overwrite.

    \b
    Example:  datagen convert curated.jsonl chat.jsonl --to sharegpt
              datagen convert alpaca.jsonl ds/ --to hf
              datagen convert curated.jsonl pairs.jsonl --to preference --rejected rejects.jsonl
    """
    from datagen.formats import read_any

    _export(
        read_any(source),
        dest,
        to,
        tokenizer,
        overwrite=overwrite,
        protect=[source] + ([rejected] if rejected else []),
        rejected=read_any(rejected) if rejected else [],
        meta=meta,
        card={"name": Path(source).stem, "source": {"file": Path(source).name}, "license": license_},
    )


@cli.group("prompts")
def prompts_group() -> None:
    """List and show prompt templates."""


@prompts_group.command("list")
def prompts_list() -> None:
    """List template names.

    \b
    Example:  datagen prompts list
    """
    from datagen.prompts import list_templates

    for name in list_templates():
        click.echo(name)


@prompts_group.command("show")
@click.argument("name")
def prompts_show(name: str) -> None:
    """Render template NAME with a <<placeholder>> for each variable.

    \b
    Example:  datagen prompts show en/self_instruct_generate
    """
    from datagen.prompts import show

    click.echo(show(name))


# ---- batch files for self-hosted engines ----


@cli.group("batch")
def batch_group() -> None:
    """Batch files: export the pending requests of a run for another engine, import its results.

    \b
    The loop for a self-hosted engine (vLLM's run-batch reads and writes the OpenAI batch format):
      datagen batch export configs/seeds-to-sft.yaml --out requests.jsonl endpoint.model=M   # exit 3: waiting
      vllm run-batch -i requests.jsonl -o results.jsonl --model M
      datagen batch import results.jsonl
      (repeat until export exits 0: multi-step stages need one round trip per step)
    """


@batch_group.command("export")
@click.argument("config", type=click.Path(path_type=Path))
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
@click.option(
    "--out",
    "out_file",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where the pending requests are written (JSONL, OpenAI batch format).",
)
def batch_export_cmd(config: Path, overrides: tuple[str, ...], out_file: Path) -> None:
    """Run CONFIG (resuming) until it needs answers it does not have; write those requests to --out.

    Exits 3 when requests were written (run them, import the results, export again) and 0 when the run is
    complete. Answers already in the cache are never exported again.

    \b
    Example:  datagen batch export configs/seeds-to-sft.yaml --out requests.jsonl endpoint.model=my-model
    """
    from datagen.run import run_pipeline

    overrides = (*overrides, "endpoint.batch=file", f"endpoint.batch_file={out_file}")
    manifest = run_pipeline(config, overrides, resume=True)  # BatchWaiting (exit 3) while requests are pending
    click.echo(f"run {manifest['name']}: complete, no request pending")


@batch_group.command("import")
@click.argument("results", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--cache-path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="SQLite answer cache. Default: $DATAGEN_HOME/llm_cache.sqlite.",
)
def batch_import_cmd(results: Path, cache_path: Path | None) -> None:
    """Load a batch results file (OpenAI batch output format) into the answer cache.

    \b
    Example:  datagen batch import results.jsonl && datagen batch export configs/x.yaml --out requests.jsonl
    """
    from datagen.llm.batch import import_results
    from datagen.llm.client import LLMClient, LLMConfig

    # A file-mode client needs no endpoint: it lends its answer cache and its answer parser.
    client = LLMClient(LLMConfig(batch="file", model="batch-import", cache_path=cache_path))
    try:
        counts = import_results(results, client.cache, client._parse_raw)
    finally:
        asyncio.run(client.aclose())
    click.echo(
        f"imported {counts['imported']} answer(s) into {client.cache.path}; "
        f"{counts['failed']} failed and {counts['malformed']} malformed line(s) skipped"
    )


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    # The default SIGTERM death runs no finally blocks: the embedded server a command started would be
    # orphaned and half-written temp files left. Exiting through SystemExit unwinds properly.
    raise SystemExit(128 + signum)


def main() -> None:
    """Console entry point: unexpected errors get one line (or a traceback with DATAGEN_DEBUG=1) and exit 1."""
    import signal

    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        cli.main(prog_name="datagen", standalone_mode=True)
    except Exception as exc:  # click already handled usage errors and DatagenError
        if os.environ.get("DATAGEN_DEBUG"):
            raise
        click.echo(
            f"internal error: {type(exc).__name__}: {redact_text(str(exc))} (set DATAGEN_DEBUG=1 for a traceback)",
            err=True,
        )
        sys.exit(1)
    finally:  # the exit's collector passes took seconds with torch loaded (issue 24: Ctrl-C within 3 s)
        from datagen.interrupt import skip_exit_collection

        skip_exit_collection()


@cli.command("classify")
@click.argument("inputs", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Output JSONL.")
@click.option(
    "--neighbours",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    multiple=True,
    help="Labelled seed-format file for the kNN vote; repeat. Default: the shipped en + zh seeds.",
)
@option("--k", config="ClassifyConfig", type=click.IntRange(min=1), help="Neighbours per vote.")
@option(
    "--model-vote/--no-model-vote",
    config="ClassifyConfig",
    help="Also ask the LLM (the Self-Instruct few-shot prompt); it only breaks ties.",
)
@option("--style", config="ClassifyConfig", type=click.Choice(["completion", "chat"]))
@llm_options
def classify_cmd(inputs, out, neighbours, **given):
    """Decide which tasks are classification tasks (finite output labels), with the evidence.

    Writes every record of INPUTS with is_classification and meta.classify (cue, neighbour and model
    votes); records that carried a label are scored, and OUT.stats.json holds the agreement.

    \b
    Example:  datagen classify tasks.jsonl --out tasks.classified.jsonl --base-url embedded
              datagen classify tasks.jsonl --out tasks.classified.jsonl --no-model-vote
    """
    from datagen.generate.classify import classify_file

    stats = run_llm_stage(
        classify_file,
        "ClassifyConfig",
        given,
        lambda cfg: cfg.model_vote,
        inputs=inputs,
        out=out,
        **({"neighbours": neighbours} if neighbours else {}),
    )
    agreement = stats["agreement"]
    summary = (
        (
            f"; agreement with the input's labels {agreement['accuracy']:.1%}, recall on classification "
            f"{agreement['recall'] or 0:.1%} ({agreement['evaluated']} labelled)"
        )
        if agreement
        else ""
    )
    click.echo(f"wrote {stats['records']} records to {out}, {stats['classification']} classification{summary}")
