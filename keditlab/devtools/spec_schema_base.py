"""The hand-written part of the spec language's JSON Schema.

Everything except the editing methods is described here; the methods (their
names and settings) come from the method registry and are merged in by
:mod:`keditlab.devtools.generate`.  Defaults are taken from the data classes in
:mod:`keditlab.spec.types`, so the schema, the docs and the resolved spec agree.

Besides standard JSON Schema, a few ``x-keditlab-*`` annotations help the
validator write good messages and the docs generator write good pages:

* ``x-keditlab-noun``: what an enum's values are called ("editing method");
* ``x-keditlab-default``: a default that is not a constant ("the file's stem");
* ``x-keditlab-layer``: the setting is a layer index, checked against the model;
* ``x-keditlab-method``: this object holds the settings of that method;
* ``x-keditlab-capabilities``: on a method's object, what it can do (batch,
  sequential, ...), from its ``capabilities``; the spec checks read it;
* ``x-keditlab-forms``: the values a ``pattern`` allows, as a person writes them
  (``cuda:N``), quoted back when a value does not match;
* ``x-keditlab-aliases``: words that mean one of those values (``gpu`` → ``cuda``),
  for the did-you-mean of such a message;
* ``x-keditlab-number-form``: what a bare whole number written here most likely
  meant, as a format string (``{{every: {}}}``), offered as the fix;
* ``x-keditlab-text-form``: the same for a bare text (``edits: data.json``), or
  for a text that is none of an enum's words where a mapping may stand
  (``judge: gpt-4o`` → ``{model: gpt-4o}``);
* ``x-keditlab-datasets``: on ``file``, the dataset each published file belongs
  to, so the spec checks can match it with ``dataset`` without importing the data layer.
"""

from __future__ import annotations

from typing import Any

from keditlab.data.datasets import DATASETS, PUBLISHED
from keditlab.spec.types import GENERAL_TASKS, GeneralSpec
from keditlab.spec.types import (ANSWER_STOPS, CHAT_TEMPLATE, EVALUATE_AT, GENERATION_CONTEXTS, METRIC_NAMES, PROTOCOLS, RUN_MODES, TRACE_KINDS,
                                 EvalSpec, JudgeSpec, ModelSpec, RunSettings, StatsSpec, TraceSpec)

SCHEMA_ID = "https://keditlab.dev/schemas/spec.schema.json"

#: The devices a spec may name (``run.device``), as a pattern and as people read them.
#: ``keditlab.models.loader.resolve_device`` checks that the named GPU exists.
DEVICE_PATTERN = r"^(auto|cpu|mps|cuda(:[0-9]+)?)$"
DEVICE_FORMS = ("auto", "cpu", "cuda", "cuda:N", "mps")
#: Words people write for a device, and the device they mean (for did-you-mean).
DEVICE_ALIASES = {"gpu": "cuda", "nvidia": "cuda", "metal": "mps", "apple": "mps"}

#: The largest seed a spec may give.  The runner seeds ``random``, ``torch`` and ``numpy.random.seed``; numpy takes only
#: 0 <= seed < 2**32, so a larger seed would pass validation and then fail once the run had started.
MAX_SEED = 2**32 - 1

# Non-empty text that is not only whitespace.
_TEXT = {"type": "string", "minLength": 1, "pattern": r"\S"}


def _text(title: str, description: str, **extra: Any) -> dict[str, Any]:
    return {"title": title, "description": description, **_TEXT, **extra}


def _record_formats() -> str:
    """The datasets of :data:`keditlab.data.DATASETS`, each with its summary."""
    return "; ".join(f"`{name}`: {d.summary}" for name, d in DATASETS.items())


def _published(*datasets: str) -> str:
    """The published files of ``datasets``, each with its size and records: the choices of ``file:``."""
    from keditlab.data.download import human_size

    return "; ".join(f"`{f.name}` ({f.records:,} records, {human_size(f.size)}): {f.summary}"
                     for f in PUBLISHED.values() if f.dataset in datasets)


def _trace_schema() -> dict[str, Any]:
    defaults = TraceSpec()
    return {
        "title": "Causal tracing",
        "description": "Causal tracing (Meng et al., 2022), run by `keditlab trace SPEC`: where the model recalls facts. `prompts` are traced one by one (heatmaps); the facts of a `records` file (or a published `file`) in ROME's known_1000.json format are averaged per layer at the subject's last token and the last token. [tracing.md](tracing.md) explains the method and how to read the results.",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "prompts": {
                "title": "Prompts",
                "description": "Facts to trace one by one, each drawn as heatmaps.",
                "type": "array",
                "items": {"$ref": "#/$defs/trace-prompt"},
                "default": [],
            },
            "records": _text("Facts file", "A JSON file of facts in ROME's known_1000.json format (`prompt`, `subject`, `attribute`); a relative path is read from the spec's folder."),
            "file": {
                "title": "Published facts file",
                "description": "Instead of `records`, a published facts file by name, pinned to the commit it was taken from: read from `$KEDITLAB_DATASETS/<name>` when that folder holds it, else from keditlab's cache, else downloaded there once (checked against its sha256). " + _published("knowns") + ".",
                "enum": [name for name, f in PUBLISHED.items() if f.dataset == "knowns"],
                "x-keditlab-noun": "published facts file",
            },
            "limit": {"title": "Facts traced", "description": "Most facts of `records` traced (facts skipped by `known_only` do not count).",
                      "type": "integer", "minimum": 1, "default": defaults.limit},
            "offset": {"title": "First record", "description": "Index of the first record of `records` read.",
                       "type": "integer", "minimum": 0, "default": defaults.offset},
            "known_only": {"title": "Known facts only", "description": "Trace only the facts of `records` whose answer the model predicts in the clean run (the others mean little); the skipped ones are listed in the results.",
                           "type": "boolean", "default": defaults.known_only},
            "kinds": {"title": "Kinds", "description": "The states restored: `residual` (a block's output), `mlp` (MLP outputs) and `attn` (attention outputs), the last two over a window of layers.",
                      "type": "array", "items": {"type": "string", "enum": list(TRACE_KINDS)}, "minItems": 1, "uniqueItems": True,
                      "default": list(defaults.kinds)},
            "samples": {"title": "Noise samples", "description": "Noise draws per fact; each restoration is averaged over them.",
                        "type": "integer", "minimum": 1, "default": defaults.samples},
            "noise": {"title": "Noise", "description": "Standard deviation of the Gaussian noise added to the subject's token embeddings; `auto`: three times the standard deviation of the subjects' token embeddings (ROME's choice).",
                      "oneOf": [{"type": "number", "minimum": 0}, {"type": "string", "enum": ["auto"]}], "default": defaults.noise},
            "window": {"title": "Window", "description": "How many consecutive layers are restored together for `mlp` and `attn`, centred on the layer shown.",
                       "type": "integer", "minimum": 1, "default": defaults.window},
        },
    }


#: The spelling of a task name the harness can look up (``hellaswag``, ``arc_easy``, ``mmlu``, ``leaderboard_bbh``).
HARNESS_TASK_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"


def _general_schema() -> dict[str, Any]:
    defaults = GeneralSpec()
    offline = ", ".join(f"`{name}`" for name in GENERAL_TASKS)
    return {
        "title": "General ability",
        "description": "What the edits cost the rest of the model, measured with lm-evaluation-harness (`pip install 'keditlab[general]'`) on the whole model: once before any edit, and after the edits, as their own rows (`general:<task>`, protocol `lm-eval:<metric>`), never mixed with the edit metrics. Measured after the last edit (batch mode: with the last batch on the model) and, in a sequential run with `evaluate_at: {every: k}`, at each of its points. Not in mode `single`, which undoes each edit right after measuring it. [protocols.md](protocols.md#general-ability-lm-evaluation-harness) says what is measured and what it costs.",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "tasks": {
                "title": "Tasks",
                "description": f"The harness tasks to run. keditlab's offline tasks: {offline} (ROME's known facts, each read with its attribute and three other attributes of its relation; the score is the harness's `acc`, the share whose true attribute is the likeliest; read from a local file, no network). Any other name is a task of the harness itself (e.g. `hellaswag`, `arc_easy`), whose data the harness downloads from the Hugging Face Hub on first use: that run needs the network, later runs read its cache.",
                "type": "array",
                "minItems": 1,
                "uniqueItems": True,
                "items": {"type": "string", "pattern": HARNESS_TASK_PATTERN, "examples": list(GENERAL_TASKS),
                          "x-keditlab-noun": "general-ability task", "x-keditlab-forms": [*GENERAL_TASKS, "NAME (an lm-evaluation-harness task: letters, digits, _ . -)"]},
                "default": list(defaults.tasks),
                "examples": [["knowns"], ["knowns", "hellaswag"]],
            },
            "limit": {
                "title": "Examples per task",
                "description": "The most examples of each task read (the harness's `limit`: its first ones), the same before and after the edits, so the two scores are paired. `all`: every example (knowns has 1,208; hellaswag 10,042, each read with four long endings: keep a limit on a CPU).",
                "oneOf": [{"type": "integer", "minimum": 1}, {"type": "string", "enum": ["all"]}],
                "default": defaults.limit,
            },
            "knowns_file": _text("Knowns file", "The file the `knowns` task reads, in ROME's known_1000.json format (`prompt`, `attribute`, `relation_id`); a relative path is read from the spec's folder.",
                                 **{"x-keditlab-default": "the published `knowns/known_1000.json`: `$KEDITLAB_DATASETS` when it holds it, else keditlab's cache, else downloaded there once and checked against its sha256"}),
        },
    }


def base_schema() -> dict[str, Any]:
    """The spec schema without method definitions (``$defs/method*`` are added by the generator)."""
    model_defaults, eval_defaults = ModelSpec(), EvalSpec()
    stats_defaults, run_defaults = StatsSpec(), RunSettings()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "keditlab spec",
        "description": "A knowledge-editing experiment: the model, the edits to make, the method(s) that make them, and what to measure.",
        "type": "object",
        "additionalProperties": False,
        "required": ["keditlab"],  # and `edits`, `trace` or `train`: checked in keditlab.spec.rules (check_has_work)
        "properties": {
            "keditlab": {
                "title": "Spec language version",
                "description": "The version of the spec language this file is written in. Only version 1 exists.",
                "const": 1,
                "examples": [1],
            },
            "name": _text(
                "Name",
                "A short name for the experiment, used in run folders and tables.",
                **{"x-keditlab-default": "the file's name without its extension"},
                examples=["quickstart"],
            ),
            "model": {
                "title": "Model",
                "description": "The model to edit: an embedded model (`smollm2-135m`, `gemma3-270m`), a Hugging Face model id, or a local path; or a mapping with `name`, `dtype` and `profile`.",
                "default": model_defaults.name,
                "oneOf": [
                    _text("Model name", "An embedded model (`smollm2-135m`, `gemma3-270m`), a Hugging Face model id, or a local path."),
                    {"$ref": "#/$defs/model"},
                ],
                "examples": ["smollm2-135m", "gemma3-270m"],
            },
            "method": {
                "title": "Method",
                "description": "The editing method: a name, a mapping with `name`, an optional `label` and the method's settings, or a list of those to compare.",
                "default": "rome",
                "oneOf": [
                    {"$ref": "#/$defs/method-choice"},
                    {
                        "title": "Methods to compare",
                        "description": "Several methods (or one method with different settings); each is applied to the same edits.",
                        "type": "array",
                        "minItems": 1,
                        "items": {"$ref": "#/$defs/method-choice"},
                    },
                ],
                "examples": ["rome"],
            },
            "edits": {
                "title": "Edits",
                "description": "The facts to write into the model: a list with one entry per edit, or a mapping that reads them from a benchmark (`dataset`, `path`, `limit`, `offset`, `sample`).",
                "oneOf": [
                    {
                        "title": "Edits listed",
                        "description": "One entry per edit.",
                        "type": "array",
                        "minItems": 1,
                        "items": {"$ref": "#/$defs/edit"},
                    },
                    {"$ref": "#/$defs/edits-file"},
                ],
                "x-keditlab-text-form": "{{dataset: " + next(iter(DATASETS)) + ", path: {}}}",
            },
            "evaluate": {
                "title": "Evaluation",
                "description": "What to measure: a list of metric names, or a mapping with `metrics` and generation settings.",
                "default": list(eval_defaults.metrics),
                "oneOf": [{"$ref": "#/$defs/metrics"}, {"$ref": "#/$defs/evaluate"}],
            },
            "stats": {"$ref": "#/$defs/stats", "x-keditlab-default": "every setting at its default"},
            "run": {"$ref": "#/$defs/run", "x-keditlab-default": "every setting at its default"},
            "trace": {"$ref": "#/$defs/trace", "x-keditlab-default": "no tracing"},
            "train": {"$ref": "#/$defs/train", "x-keditlab-default": "no training"},
            "sweep": {
                "title": "Sweep",
                "description": "A grid of runs, run by `keditlab sweep SPEC`: each key is a spec path (`method`, `model`, `edits`, `edits.limit`, `run.seed`, `method.layers`, ...) and its value the list of values it takes; the cells are every combination, less those under `exclude`. Each cell is this spec with its values written in, checked like any spec. [sweeps.md](sweeps.md) explains it.",
                "type": "object",
                "minProperties": 1,
                "properties": {
                    "exclude": {
                        "title": "Combinations left out",
                        "description": "Each entry maps some swept paths to a value (or its label); a cell that matches every path of an entry is not run.",
                        "type": "array",
                        "items": {"type": "object", "minProperties": 1},
                    },
                },
                "additionalProperties": {"type": "array", "minItems": 1,
                                         "description": "The values this spec path takes, one per column of the table."},
                "x-keditlab-default": "one run",
                "examples": [{"method": ["rome", "ft-m"], "run.seed": [0, 1]}],
            },
        },
        "$defs": {
            "trace": _trace_schema(),
            "general": _general_schema(),
            "trace-prompt": {
                "title": "Fact to trace",
                "description": "A prompt naming a subject, traced on its own: one heatmap per kind.",
                "type": "object",
                "additionalProperties": False,
                "required": ["prompt", "subject"],
                "properties": {
                    "prompt": _text("Prompt", "The text the model continues, e.g. `The Eiffel Tower is located in the city of`."),
                    "subject": _text("Subject", "The entity whose token embeddings are corrupted, spelled exactly as in the prompt."),
                    "answer": _text("Answer", "The expected continuation; its first token is scored. Empty: whatever the model predicts."),
                },
            },
            "model": {
                "title": "Model settings",
                "description": "The model to edit, with how to load it.",
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "name": _text(
                        "Model name",
                        "An embedded model (`smollm2-135m`, `gemma3-270m`), a Hugging Face model id, or a local path.",
                        default=model_defaults.name,
                        examples=["smollm2-135m", "gemma3-270m"],
                    ),
                    "dtype": {
                        "title": "Weights dtype",
                        "description": "The dtype to load the weights in; `auto` means float32 on every device. `bfloat16` halves the memory: statistics, solves and optimised vectors stay in float32, the edit is written in bfloat16 and restored bit for bit (on a CPU without bfloat16 arithmetic the edit is computed on a float32 upcast, with a warning). `float16` is for GPUs: on a CPU it is refused at load. See docs/performance.md, Half precision.",
                        "enum": ["auto", "float32", "float16", "bfloat16"],
                        "default": model_defaults.dtype,
                        "x-keditlab-noun": "dtype",
                    },
                    "chat_template": {
                        "title": "Chat template",
                        "description": "`on`: every prompt, for editing and for evaluation alike, is put through the tokenizer's chat template as a user turn (the answer follows the assistant header); `off`: prompts are read as written; `auto`: on exactly when `evaluate.context` is `chat`. The value used is recorded in the run's manifest.",
                        "enum": list(CHAT_TEMPLATE),
                        "default": model_defaults.chat_template,
                    },
                    "profile": {"$ref": "#/$defs/profile"},
                },
            },
            "profile": {
                "title": "Model profile",
                "description": "Where things live in a model keditlab does not know: module paths, with `{layer}` standing for the layer number. Usually derived automatically; give it only for an unknown architecture.",
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "layers": _text("Layers", "Path of the list of transformer blocks.", examples=["model.layers"]),
                    "mlp_out": _text(
                        "MLP output projection",
                        "Path template of the MLP output projection of a layer.",
                        examples=["model.layers.{layer}.mlp.down_proj"],
                    ),
                    "final_norm": _text("Final norm", "Path of the norm applied before the LM head.", examples=["model.norm"]),
                    "lm_head": _text("LM head", "Path of the output (unembedding) layer.", examples=["lm_head"]),
                    "embed": _text("Embedding", "Path of the token embedding.", examples=["model.embed_tokens"]),
                    "mlp_out_transposed": {
                        "title": "MLP output stored transposed",
                        "description": "True when the projection stores its weight as (in, out), as GPT-2's Conv1D does.",
                        "type": "boolean",
                        "default": False,
                    },
                },
            },
            "label": _text(
                "Label",
                "The name this method goes by in tables; must be unique within the spec.",
                **{"x-keditlab-default": "the method's name"},
                examples=["rome-l5"],
            ),
            "edit": {
                "title": "Edit",
                "description": "One fact to write: after the edit, `prompt` should be completed with `target`.",
                "type": "object",
                "additionalProperties": False,
                "required": ["prompt", "subject", "target"],
                "properties": {
                    "prompt": _text(
                        "Prompt",
                        "The text the model completes; it must mention the subject.",
                        examples=["The Eiffel Tower is located in the city of"],
                    ),
                    "subject": _text(
                        "Subject",
                        "The entity the fact is about, spelled exactly as in the prompt (ROME edits at its last token).",
                        examples=["Eiffel Tower"],
                    ),
                    "target": _text("Target", "The new answer the edited model should give.", examples=["Rome"]),
                    "ground_truth": _text(
                        "Ground truth",
                        "The answer the model gives before the edit; when given, P(target) > P(ground truth) is also reported.",
                        examples=["Paris"],
                    ),
                    "rephrase": {
                        "title": "Rephrasings",
                        "description": "Paraphrases of the prompt that should also be answered with the target (generalization).",
                        "default": [],
                        "oneOf": [
                            _text("Rephrasing", "One paraphrase of the prompt."),
                            {"type": "array", "items": _text("Rephrasing", "A paraphrase of the prompt.")},
                        ],
                    },
                    "locality": {
                        "title": "Locality probes",
                        "description": "Unrelated facts that must not change.",
                        "type": "array",
                        "default": [],
                        "items": {"$ref": "#/$defs/probe"},
                    },
                    "portability": {
                        "title": "Portability probes",
                        "description": "Facts that should follow from the edit (e.g. the new city's country).",
                        "type": "array",
                        "default": [],
                        "items": {"$ref": "#/$defs/probe"},
                    },
                    "id": {
                        "title": "Case id",
                        "description": "A name for this edit in results.",
                        "type": ["string", "integer"],
                        "x-keditlab-default": "the edit's position in the list (0, 1, ...)",
                        "examples": ["eiffel"],
                    },
                },
            },
            "edits-file": {
                "title": "Edits from a benchmark",
                "description": "The edits read from a benchmark's records, each record becoming one edit with its probes, as if listed in the spec. The older spelling `{records: FILE, format: NAME}` is read as `{path: FILE, dataset: NAME}`.",
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "dataset": {
                        "title": "Dataset",
                        "description": "Which benchmark, and so which reader turns its records into edits: " + _record_formats() + ".",
                        "enum": list(DATASETS),
                        "examples": [next(iter(DATASETS))],
                        "x-keditlab-noun": "dataset",
                    },
                    "path": _text(
                        "File",
                        "The JSON file of records. A relative path is read from the spec file's folder (from the current folder for a spec given as a dict); `~` is the home folder. Without it the dataset's public file is downloaded once into keditlab's cache.",
                        examples=["../datasets/zsre/zsre_mend_train-1k.json"],
                        **{"x-keditlab-default": "the dataset's public file, downloaded into the cache"},
                    ),
                    "file": {
                        "title": "Published file",
                        "description": "Instead of `path`, a published benchmark file by name, pinned to the commit of the public repository it was taken from: read from `$KEDITLAB_DATASETS/<name>` when that folder holds it, else from keditlab's cache, else downloaded there once (with a progress bar) and checked against its sha256. `keditlab validate` downloads nothing; it notes the files a run will download. " + _published(*DATASETS) + ".",
                        "enum": [name for name, f in PUBLISHED.items() if f.dataset in DATASETS],
                        "examples": ["zsre/zsre_mend_train-1k.json"],
                        "x-keditlab-noun": "published file",
                        "x-keditlab-datasets": {name: f.dataset for name, f in PUBLISHED.items() if f.dataset in DATASETS},
                    },
                    "records": _text("File (older name)", "The older name of `path`."),
                    "format": {
                        "title": "Dataset (older name)",
                        "description": "The older name of `dataset`.",
                        "enum": list(DATASETS),
                        "x-keditlab-noun": "dataset",
                    },
                    "limit": {
                        "title": "Number of records",
                        "description": "How many records to read, from `offset` on (fewer if the file ends first).",
                        "type": "integer",
                        "minimum": 1,
                        "x-keditlab-default": "every record from `offset` to the end of the file",
                        "examples": [100],
                    },
                    "offset": {
                        "title": "Records skipped",
                        "description": "How many records at the start of the file to skip; must leave at least one record.",
                        "type": "integer",
                        "minimum": 0,
                        "default": 0,
                    },
                    "sample": {
                        "title": "Random sample",
                        "description": "Draw `n` records at random (seeded by `seed`) from the window `offset`..`offset+limit`, kept in file order.",
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["n"],
                        "properties": {
                            "n": {"title": "Records drawn", "description": "How many records to draw.", "type": "integer", "minimum": 1},
                            "seed": {"title": "Seed", "description": f"The seed of the draw: a whole number from 0 to {MAX_SEED} (2³² − 1).",
                                     "type": "integer", "minimum": 0, "maximum": MAX_SEED, "default": 0},
                        },
                    },
                    "part": {
                        "title": "KnowEdit part",
                        "description": "Which of KnowEdit's six parts the file holds (`dataset: knowedit` only): `recent`, `zsre`, `counterfact` (facts), `wikibio` (a biography sentence rewritten), `convsent` (the model's opinion of a topic turned positive or negative; scored by the sentiment of its answers) or `sanitation` (questions to answer with \"I don't know.\", the others kept). Recognised from the file when left out; when given, the file must hold it ([protocols.md](protocols.md#knowedit)).",
                        "enum": ["recent", "zsre", "counterfact", "wikibio", "convsent", "sanitation"],
                        "x-keditlab-default": "recognised from the file",
                        "x-keditlab-noun": "KnowEdit part",
                    },
                    "on_bad_record": {
                        "title": "Malformed records",
                        "description": "`stop`: a malformed record is an error naming the file and the record's index; `skip`: it is left out and noted in the run's manifest.",
                        "enum": ["stop", "skip"],
                        "default": "stop",
                    },
                },
            },
            "probe": {
                "title": "Probe",
                "description": "A prompt and the answer it should get.",
                "type": "object",
                "additionalProperties": False,
                "required": ["prompt", "answer"],
                "properties": {
                    "prompt": _text("Prompt", "The text the model completes.", examples=["The capital of France is"]),
                    "answer": _text("Answer", "The expected completion.", examples=["Paris"]),
                },
            },
            "metric": {
                "title": "Metric",
                "description": "A metric name.",
                "enum": list(METRIC_NAMES),
                "x-keditlab-noun": "metric",
            },
            "metrics": {
                "title": "Metrics",
                "description": "The metrics to report: " + ", ".join(METRIC_NAMES) + ".",
                "type": "array",
                "uniqueItems": True,
                "items": {"$ref": "#/$defs/metric"},
                "default": list(eval_defaults.metrics),
            },
            "evaluate": {
                "title": "Evaluation settings",
                "description": "What to measure, with the settings of generation-based metrics.",
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "metrics": {"$ref": "#/$defs/metrics"},
                    "max_new_tokens": {
                        "title": "Generated tokens",
                        "description": "How many tokens to generate for generation-based metrics (fluency).",
                        "type": "integer",
                        "minimum": 1,
                        "default": eval_defaults.max_new_tokens,
                    },
                    "batch_size": {
                        "title": "Batch size",
                        "description": "How many probes to run through the model at once.",
                        "type": "integer",
                        "minimum": 1,
                        "default": eval_defaults.batch_size,
                    },
                    "protocols": {
                        "title": "Protocols",
                        "description": "How values are measured, each reported apart ([protocols.md](protocols.md)): `teacher_forced` (token accuracy with the answer fed in, KnowEdit), `probability` (CounterFact's ES, PS, NS, magnitudes and score S; needs a ground truth), `generation` (greedy answers scored as text: exact match and answer-contained).",
                        "type": "array",
                        "uniqueItems": True,
                        "minItems": 1,
                        "items": {"enum": list(PROTOCOLS), "x-keditlab-noun": "protocol"},
                        "default": list(eval_defaults.protocols),
                    },
                    "context": {
                        "title": "Generation context",
                        "description": "What the generation protocol puts around a prompt: `bare` (as written), `qa` (`Question: <prompt>` then `Answer:`), `chat` (the model's chat template, a user turn).",
                        "enum": list(GENERATION_CONTEXTS),
                        "default": eval_defaults.context,
                    },
                    "answer_tokens": {
                        "title": "Answer tokens",
                        "description": "Most tokens of a generated answer (generation protocol); `stop` says what ends it earlier.",
                        "type": "integer",
                        "minimum": 1,
                        "default": eval_defaults.answer_tokens,
                    },
                    "stop": {
                        "title": "Answer stops",
                        "description": "What ends a generated answer before `answer_tokens` (generation protocol): `sentence` (`.`, `!` or `?` followed by white space), `newline` (a line break after some text). `[]`: only `answer_tokens` and the end-of-sequence token, which always ends an answer.",
                        "type": "array",
                        "uniqueItems": True,
                        "items": {"enum": list(ANSWER_STOPS), "x-keditlab-noun": "stop rule"},
                        "default": list(eval_defaults.stop),
                    },
                    "judge": {
                        "title": "Judge",
                        "description": "Who decides whether a generated answer states the expected answer (generation protocol, [protocols.md](protocols.md#the-judge)): `rule` (exact match, and answer contained, against the answer and its aliases), `{model: NAME_OR_PATH}` (a local judge model), or `{url: http://HOST:PORT/v1, model: NAME, api_key_env: VAR}` (an OpenAI-compatible endpoint). With a judge, its yes or no is the generation value of reliability, generalization, portability, multihop, ripple and locality_accuracy; the rules' figures stay beside it as `*_exact` and `*_contains`, and the run records which judge it was.",
                        "default": "rule",
                        "oneOf": [
                            {"title": "Rule judge", "description": "Exact match, and answer contained.", "enum": ["rule"], "x-keditlab-noun": "judge"},
                            {"$ref": "#/$defs/judge"},
                        ],
                        "x-keditlab-text-form": "{{model: {0}}} (a local judge model), or {{url: http://HOST:PORT/v1, model: {0}}} (a served one)",
                    },
                    "general": {"$ref": "#/$defs/general", "x-keditlab-default": "not measured"},
                },
            },
            "judge": {
                "title": "Judge model",
                "description": "A model that judges each generated answer: asked a fixed prompt (the question, the expected answers, the answer given), it replies yes or no. Without `url` it is a local model, loaded as the edited model is, on the run's device; with `url` it is the model an OpenAI-compatible endpoint serves (vLLM, llama.cpp's llama-server, a hosted API), checked with one request before any edit.",
                "type": "object",
                "additionalProperties": False,
                "required": ["model"],
                "properties": {
                    "model": _text("Judge model", "The judge model. Without `url`, a local model, named as `model.name` is (an embedded model, a Hugging Face id, a local path); with `url`, the name the endpoint serves it under.",
                                   examples=["Qwen/Qwen2.5-1.5B-Instruct"]),
                    "url": _text("Endpoint", "The base URL of an OpenAI-compatible API, ending in `/v1`; keditlab posts to `{url}/chat/completions`. E.g. vLLM's `http://127.0.0.1:8000/v1`, llama.cpp's llama-server `http://127.0.0.1:8080/v1`, or a hosted API.",
                                 examples=["http://127.0.0.1:8000/v1"], **{"x-keditlab-default": "none: a local judge model"}),
                    "api_key_env": _text("Key variable", "The environment variable that holds the endpoint's API key (sent as `Authorization: Bearer <key>`; never written to the run folder). Leave it out for a server that needs no key.",
                                         examples=["OPENAI_API_KEY"], **{"x-keditlab-default": "no key sent"}),
                    "timeout": {"title": "Timeout", "description": "Seconds each request to the endpoint may take.",
                                "type": "number", "exclusiveMinimum": 0, "default": JudgeSpec().timeout},
                },
            },
            "stats": {
                "title": "Covariance statistics",
                "description": "Where ROME's key covariance E[k kᵀ] comes from; computed once per model, layer and corpus, then cached.",
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "corpus": _text(
                        "Corpus",
                        "`model-samples` (text sampled from the model itself, works offline), a local `.txt`/`.md` file or a folder of them, or a Hugging Face dataset written `hf:<dataset id>[:<config>]` (needs the `datasets` library and the network).",
                        default=stats_defaults.corpus,
                    ),
                    "samples": {
                        "title": "Tokens",
                        "description": "How many tokens of corpus text the covariance is estimated from (a token count, not a number of texts): text is read until at least this many tokens are collected, in pieces of at most `max_length` tokens. `auto`: ten times the key width (the MLP's hidden size), 15,360 tokens for the embedded model.",
                        "oneOf": [
                            {"type": "integer", "minimum": 1},
                            {"type": "string", "enum": ["auto"]},
                        ],
                        "default": stats_defaults.samples,
                    },
                    "max_length": {
                        "title": "Piece length",
                        "description": "Most tokens per piece of text the model reads at once; longer texts are cut into pieces of this length.",
                        "type": "integer",
                        "minimum": 1,
                        "default": stats_defaults.max_length,
                    },
                    "unrelated": {
                        "$ref": "#/$defs/edits-file",
                        "title": "Unrelated facts held",
                        "description": "Benchmark records read only for their locality probes: unrelated questions and their answers that the methods with a preservation term (`ultraedit`, `locft-bf`, `ft-m`, `ft-l`: `preserve`) hold unchanged, instead of text sampled from the model. Use records kept apart from the run's edits; a question the run also measures is left out.",
                        "x-keditlab-default": "text sampled from the model",
                        "examples": [{"dataset": "zsre", "path": "../datasets/zsre/zsre_mend_eval_portability_gpt4.json", "limit": 256}],
                    },
                },
            },
            "run": {
                "title": "Run settings",
                "description": "How to run: seed, device, where results go, and the schedule of the edits (`mode`, `batch_size`, `evaluate_at`; [runs.md](runs.md) says which model each measurement is taken on).",
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "seed": {
                        "title": "Seed",
                        "description": f"Seed of every random choice, so a run can be repeated: a whole number from 0 to {MAX_SEED} (2³² − 1, the largest seed numpy takes).",
                        "type": "integer",
                        "minimum": 0,
                        "maximum": MAX_SEED,
                        "default": run_defaults.seed,
                    },
                    "device": {
                        "title": "Device",
                        "description": "Where the model runs: `auto` (the CUDA GPU if there is one, else the CPU), `cpu`, `cuda` (the first CUDA GPU), `cuda:N` (CUDA GPU number N, from 0), or `mps` (Apple silicon). Asking for a GPU the machine does not have is an error when the model is loaded.",
                        "type": "string",
                        "pattern": DEVICE_PATTERN,
                        "default": run_defaults.device,
                        "examples": ["auto"],
                        "x-keditlab-noun": "device",
                        "x-keditlab-forms": list(DEVICE_FORMS),
                        "x-keditlab-aliases": dict(DEVICE_ALIASES),
                    },
                    "out": {
                        "title": "Output folder",
                        "description": "Where the run folder is written. Empty: keditlab's default runs folder.",
                        "type": ["string", "null"],
                        "default": run_defaults.out,
                    },
                    "mode": {
                        "title": "Run mode",
                        "description": "How the edits are applied. `single`: each edit alone on the unedited model, measured, then restored. `batch`: `batch_size` edits in one method call on the unedited model, measured, then restored before the next batch (needs a method that can batch). `sequential`: batches of `batch_size` applied one after another on the already edited model, restored only when the method has finished; measured as `evaluate_at` says.",
                        "enum": list(RUN_MODES),
                        "default": run_defaults.mode,
                        "x-keditlab-noun": "run mode",
                    },
                    "batch_size": {
                        "title": "Edits per method call",
                        "description": "How many edits one method call applies. Must be 1 in mode `single`; above 1 it needs a method that can batch.",
                        "type": "integer",
                        "minimum": 1,
                        "default": run_defaults.batch_size,
                    },
                    "evaluate_at": {
                        "title": "Evaluation points",
                        "description": "Sequential mode only: when edits are measured. `after_each`: each batch right after it is applied. `after_all`: every edit once all are applied. `{every: k}`: after every k edits (a multiple of `batch_size`), all edits so far, and again at the end: a retention curve.",
                        "x-keditlab-default": "`after_each` in mode `sequential`; not allowed in the other modes",
                        "oneOf": [
                            {
                                "title": "Evaluation point",
                                "description": "`after_each` or `after_all`.",
                                "enum": list(EVALUATE_AT),
                                "x-keditlab-noun": "evaluation point",
                            },
                            {"$ref": "#/$defs/evaluate-every"},
                        ],
                        "examples": ["after_all"],
                        "x-keditlab-number-form": "{{every: {}}}",
                    },
                    "save_edits": {
                        "title": "Save edits",
                        "description": "Write what each method call changed under the run folder (`edits/<method>/call-NNNN/`: the edited weights as safetensors, with a fingerprint of the values they replaced), to load again with `keditlab.load_edits(model, folder)` or write out as a model with `keditlab export`. Every method but IKE, whose edits are a prompt.",
                        "type": "boolean",
                        "default": run_defaults.save_edits,
                    },
                },
            },
            "evaluate-every": {
                "title": "Every k edits",
                "description": "Measure all edits applied so far after every `every` edits, and once more at the end.",
                "type": "object",
                "additionalProperties": False,
                "required": ["every"],
                "properties": {
                    "every": {
                        "title": "Edits between measurements",
                        "description": "How many edits go on between two measurements; a multiple of `batch_size`.",
                        "type": "integer",
                        "minimum": 1,
                        "examples": [10],
                    },
                },
            },
        },
    }
