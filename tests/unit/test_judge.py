"""The generation protocol's judge (``evaluate.judge``) and its stop rules (``evaluate.stop``), on tiny models.

A stub server on 127.0.0.1 speaks the OpenAI chat-completions API: it replies
yes or no by a rule the test sets and records every request it gets (path,
``Authorization`` header, JSON body).  The runner edits a tiny random Llama
through it, and the tests compare what the server was sent with what the run
recorded.  A missing key, an unreachable endpoint, a refused key, a slow
server and a judge that answers neither yes nor no must each stop the run
with one line naming the spec field and the fix, before any edit.
"""

from __future__ import annotations

import http.server
import json
import re
import socket
import threading
import time

import pytest
import torch

from keditlab.evaluate import answers, measurement
from keditlab.evaluate import cut_answer, measure
from keditlab.evaluate.answers import AnswerStop
from keditlab.evaluate.judge import (JUDGE_PROMPT, TEST_QUESTION, JudgeError, JudgeQuestion, ModelJudge, open_judge,
                                     read_verdict)
from keditlab.models import LoadedModel, derive_profile
from keditlab.runner import RunError, run_spec
from keditlab.spec import EditCase, EvalSpec, JudgeSpec, MethodSpec, ModelSpec, Probe, Spec, parse_spec
from tests.conftest import make_tiny_model
from tests.unit.test_evaluate_unit import WordTokenizer
from tests.unit.test_results_docs import field_names, undocumented
from tests.unit.test_run_modes import Nudge

KEY_ENV = "KEDITLAB_TEST_JUDGE_KEY"
KEY = "sk-test-not-a-real-key-123"
EDITS = tuple(
    EditCase(prompt=f"The city number {i} is in", subject=f"city number {i}", target=target,
             rephrase=(f"City {i} lies in",), locality=(Probe("locality", "The capital of Japan is", "Tokyo"),),
             portability=(Probe("portability", f"The country of city number {i} is", "Italy"),), case_id=f"c{i}")
    for i, target in enumerate(["Rome", "Paris"]))
METRICS = ("reliability", "generalization", "locality", "portability")


# --- the stub server ---------------------------------------------------------------------------------------------

class Stub:
    """What the stub server does (``rule``: prompt -> reply; ``status``, or ``statuses`` for the next requests
    one by one; ``delay``) and what it received."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.rule = says_yes_for_city_0
        self.status = 200
        self.statuses: list[int] = []
        self.delay = 0.0
        self.url = ""


def question_in(prompt: str) -> str:
    return re.search(r"^Question: (.*)$", prompt, re.M).group(1)


def says_yes_for_city_0(prompt: str) -> str:
    """Yes for the test question and for questions about city number 0; no for the rest."""
    question = question_in(prompt)
    return "Yes." if "number 0" in question or "capital of France" in question else "No, it does not."


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # a client that timed out and left: nothing to report
        pass


@pytest.fixture
def stub(monkeypatch):
    """A local OpenAI-compatible chat-completions server for one test: a :class:`Stub` with its ``url`` (…/v1)."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")   # a proxy in the environment must not catch it
    state = Stub()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the standard library's name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.requests.append({"path": self.path, "authorization": self.headers.get("Authorization"), "body": body})
            if state.delay:
                time.sleep(state.delay)
            status = state.statuses.pop(0) if state.statuses else state.status
            if status != 200:
                code, payload = status, {"error": {"message": "the stub refuses this request"}}
            else:
                reply = state.rule(body["messages"][-1]["content"])
                code, payload = 200, {"id": "stub", "object": "chat.completion", "model": body["model"],
                                      "choices": [{"index": 0, "finish_reason": "stop",
                                                   "message": {"role": "assistant", "content": reply}}]}
            data = json.dumps(payload).encode("utf-8")
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):  # keep the test output quiet
            pass

    server = _QuietServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield state
    server.shutdown()
    server.server_close()


# --- a run through the stub -------------------------------------------------------------------------------------

@pytest.fixture
def registered(monkeypatch):
    """The test method ``nudge`` (tests/unit/test_run_modes.py) in the registry, its calls counted from zero."""
    from keditlab import methods

    monkeypatch.setitem(methods._REGISTRY, "nudge", Nudge)
    Nudge.calls = []
    yield


def judged_spec(url: str, key_env: str | None = KEY_ENV, timeout: float = 10, chat: str = "auto", edits=EDITS) -> Spec:
    judge = JudgeSpec(model="stub-judge", url=url, api_key_env=key_env, timeout=timeout)
    return Spec(name="judged", model=ModelSpec(chat_template=chat), methods=(MethodSpec("nudge"),), edits=edits,
                evaluate=EvalSpec(metrics=METRICS, protocols=("generation",), answer_tokens=4, judge=judge))


def params(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def run_judged(spec: Spec, tokenizer, out, model=None):
    model = model or make_tiny_model("llama", vocab_size=49152)
    Nudge.reference = params(model)
    logs: list[str] = []
    run = run_spec(spec, out, loaded=LoadedModel(model, tokenizer, derive_profile(model)), log=logs.append)
    return run, model, logs


def judged_probes(run) -> list[dict]:
    """Every generation probe of every record, before and after."""
    return [probe for record in run.cases for when in ("pre", "post") for probe in record[when]["probes"]
            if probe["protocol"] == "generation"]


def test_a_run_judged_by_an_endpoint_records_every_prompt_the_server_received(stub, registered, tokenizer, tmp_path,
                                                                              monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    run, model, logs = run_judged(judged_spec(stub.url), tokenizer, tmp_path / "runs")

    # the server: the test question first, then the answers; every request with the key and the same body shape
    sent = stub.requests
    assert sent[0]["body"]["messages"] == [{"role": "user", "content": TEST_QUESTION.prompt()}]
    assert {r["path"] for r in sent} == {"/v1/chat/completions"}
    assert {r["authorization"] for r in sent} == {f"Bearer {KEY}"}
    assert all(r["body"]["model"] == "stub-judge" and r["body"]["temperature"] == 0 for r in sent)

    # the run: every judged answer kept, with the exact prompt the server got and its verdict
    probes = judged_probes(run)
    assert {p["metric"] for p in probes} == set(METRICS)
    recorded = {p["extra"]["judge"]["prompt"] for p in probes}
    assert recorded == {r["body"]["messages"][0]["content"] for r in sent[1:]}
    for probe in probes:
        extra = probe["extra"]
        rebuilt = JudgeQuestion(probe["prompt"], tuple(extra["expected"]), extra["answer"]).prompt()
        assert extra["judge"]["prompt"] == rebuilt == JUDGE_PROMPT.format(
            question=probe["prompt"], expected=" or ".join(extra["expected"]), answer=extra["answer"])
        wanted = "yes" if "number 0" in probe["prompt"] else "no"
        assert extra["judge"]["verdict"] == wanted
        assert extra["judge"]["reply"] == ("Yes." if wanted == "yes" else "No, it does not.")
        assert extra["exact"] in (0.0, 1.0) and extra["contains"] in (0.0, 1.0)   # the rules, kept beside
        judged = extra["accuracy"] if probe["metric"] == "locality" else probe["value"]
        assert judged == (1.0 if wanted == "yes" else 0.0)

    # the figures: the verdicts are the generation values; the rules' sit under their own keys; the judge is named
    name = f"stub-judge at {stub.url}"
    assert run.summary["judge"] == name
    metrics = run.summary["methods"]["nudge"]["metrics"]
    assert metrics["reliability"]["generation"]["post"] == 0.5         # city 0 yes, city 1 no
    assert metrics["portability"]["generation"]["post"] == 0.5
    assert metrics["generalization"]["generation"]["post"] == 0.0      # "City 0 lies in": no
    assert metrics["locality_accuracy"]["generation"]["post"] == 0.0
    assert {"reliability_exact", "reliability_contains", "locality_exact"} <= set(metrics)
    assert f"judge: {name}" in (run.path / "table.md").read_text(encoding="utf-8")
    manifest = run.manifest["judge"]
    assert (manifest["kind"], manifest["model"], manifest["url"], manifest["api_key_env"]) == ("endpoint", "stub-judge",
                                                                                               stub.url, KEY_ENV)
    assert manifest["prompt"] == JUDGE_PROMPT and manifest["request"]["body"]["max_tokens"] > 0
    assert any("Checking the judge" in line for line in logs)

    # the key itself is written nowhere; every key written is documented
    for path in run.path.rglob("*"):
        if path.is_file():
            assert KEY not in path.read_text(encoding="utf-8"), path
    record_keys = set().union(*(field_names(r, data_keyed={"changed_parameters"}, skip={"details"}) for r in run.cases))
    assert undocumented(record_keys) == []
    assert undocumented(field_names(run.manifest, data_keyed={"methods"}, skip={"spec", "versions", "methods.*.settings"})) == []
    assert undocumented(field_names(run.summary, data_keyed={"methods", "methods.*.metrics", "methods.*.metrics.*"},
                                    skip={"methods.*.settings"})) == []
    assert all(torch.equal(p.detach(), Nudge.reference[n]) for n, p in model.named_parameters())


def test_the_judge_is_shown_the_question_as_written_when_prompts_go_through_the_chat_template(stub, registered,
                                                                                          tokenizer, tmp_path):
    run, _, _ = run_judged(judged_spec(stub.url, key_env=None, chat="on", edits=EDITS[:1]), tokenizer, None)
    questions = {question_in(r["body"]["messages"][0]["content"]) for r in stub.requests[1:]}
    assert "The city number 0 is in" in questions
    assert not any("<|im_start|>" in q for q in questions)
    assert {r["authorization"] for r in stub.requests} == {None}   # no api_key_env: no key sent
    assert run.manifest["model"]["chat_template"] == "on"


# --- errors before any edit ---------------------------------------------------------------------------------------

def refused_before_editing(spec: Spec, tokenizer, tmp_path, monkeypatch) -> str:
    """The run's one-line error; asserts that nothing was edited, measured or written first."""
    measured: list = []
    monkeypatch.setattr("keditlab.runner.run.measure", lambda *a, **k: measured.append(1))
    model = make_tiny_model("llama", vocab_size=49152)
    before = params(model)
    with pytest.raises(RunError) as info:
        run_spec(spec, tmp_path / "runs", loaded=LoadedModel(model, tokenizer, derive_profile(model)), log=lambda m: None)
    assert Nudge.calls == [] and measured == [], "the method ran, or the model was measured, before the judge was checked"
    assert not (tmp_path / "runs").exists()
    assert all(torch.equal(p.detach(), before[n]) for n, p in model.named_parameters())
    error = info.value
    assert error.__cause__ is None and error.__suppress_context__   # one line, not a traceback from urllib
    message = str(error)
    assert "Fix:" in message and "Traceback" not in message and "urllib" not in message
    return message


def test_a_missing_key_stops_the_run_before_any_edit(stub, registered, tokenizer, tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    message = refused_before_editing(judged_spec(stub.url), tokenizer, tmp_path, monkeypatch)
    assert message.startswith("evaluate.judge.api_key_env:")
    assert KEY_ENV in message and stub.url in message and f"export {KEY_ENV}=" in message
    assert stub.requests == []   # not even the test question was sent


def test_an_unreachable_endpoint_stops_the_run_before_any_edit(registered, tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with socket.socket() as probe:   # a port nobody listens on once it is closed
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/v1"
    message = refused_before_editing(judged_spec(url, key_env=None), tokenizer, tmp_path, monkeypatch)
    assert message.startswith("evaluate.judge.url:")
    assert url in message and "cannot be reached" in message and "vllm serve" in message


def test_a_refused_key_a_slow_server_and_a_reply_that_is_neither_yes_nor_no_stop_the_run(stub, registered, tokenizer,
                                                                                        tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    stub.status = 401
    message = refused_before_editing(judged_spec(stub.url), tokenizer, tmp_path, monkeypatch)
    assert message.startswith("evaluate.judge.api_key_env:") and "HTTP 401" in message and KEY_ENV in message
    assert "the stub refuses this request" in message and KEY not in message

    stub.status, stub.delay = 200, 1.0
    message = refused_before_editing(judged_spec(stub.url, timeout=0.2), tokenizer, tmp_path, monkeypatch)
    assert message.startswith("evaluate.judge.timeout:") and "0.2 s" in message

    stub.delay, stub.rule = 0.0, (lambda prompt: "Maybe.")
    message = refused_before_editing(judged_spec(stub.url), tokenizer, tmp_path, monkeypatch)
    assert message.startswith("evaluate.judge.model:") and "neither yes nor no" in message and "'Maybe.'" in message
    assert len(stub.requests) == 3   # one test question per run, tried once


def test_a_busy_server_gets_another_try_during_a_run_but_not_at_the_check(stub):
    from keditlab.evaluate.chat_endpoint import Endpoint, EndpointError, chat_reply

    body = {"model": "stub-judge", "messages": [{"role": "user", "content": TEST_QUESTION.prompt()}]}
    stub.statuses = [503]
    assert chat_reply(Endpoint(stub.url), body, attempts=2) == "Yes."   # after one second
    stub.statuses = [503]
    with pytest.raises(EndpointError, match=r"^evaluate\.judge: the judge endpoint .* answered HTTP 503"):
        chat_reply(Endpoint(stub.url), body, attempts=1)
    assert len(stub.requests) == 3


# --- a local judge model -------------------------------------------------------------------------------------------

class AlwaysSays(torch.nn.Module):
    """An LM head whose argmax is always ``token``: a judge model that always says the same word."""

    def __init__(self, vocab: int, token: int) -> None:
        super().__init__()
        self.vocab, self.token = vocab, token

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(*hidden.shape[:-1], self.vocab, dtype=hidden.dtype, device=hidden.device)
        logits[..., self.token] = 10.0
        return logits


@pytest.fixture
def yes_model(tokenizer, monkeypatch):
    """``keditlab.models.load_model`` answering with a tiny model that says " yes" to everything; the calls it got."""
    (yes,) = tokenizer.encode(" yes", add_special_tokens=False)
    judge = make_tiny_model("llama", vocab_size=49152)
    judge.lm_head = AlwaysSays(49152, yes)
    calls: list[tuple] = []

    def load_model(name, device="auto", dtype=None, profile=None):
        calls.append((name, device))
        return LoadedModel(judge, tokenizer, derive_profile(judge))

    monkeypatch.setattr("keditlab.models.load_model", load_model)
    return calls


def test_a_local_judge_model_is_loaded_by_keditlab_and_asked_in_its_chat_template(yes_model, tokenizer):
    judge = open_judge(JudgeSpec(model="tiny-judge"), device="cpu", batch_size=4)
    assert isinstance(judge, ModelJudge) and yes_model == [("tiny-judge", "cpu")]
    assert judge.check().verdict == "yes"
    assert "chat template" in judge.describe()["input"] and judge.describe()["kind"] == "model"

    edited = make_tiny_model("llama", vocab_size=49152)
    settings = EvalSpec(metrics=METRICS, protocols=("generation",), answer_tokens=3, judge=JudgeSpec(model="tiny-judge"))
    for given in (judge, None):   # None: measure opens the judge the settings name
        (out,) = measure(edited, tokenizer, EDITS[:1], settings, judge=given)
        probes = [p for p in out.probes if p.protocol == "generation"]
        assert len(probes) == 4 and all(p.extra["judge"]["verdict"] == "yes" for p in probes)
        assert all(p.extra["judge"]["prompt"] == JudgeQuestion(p.prompt, tuple(p.extra["expected"]), p.extra["answer"]).prompt()
                   for p in probes)
        assert out.scores()[("reliability", "generation")] == 1.0 and out.scores()[("locality_accuracy", "generation")] == 1.0
    assert yes_model == [("tiny-judge", "cpu"), ("tiny-judge", "cpu")]


def test_a_judge_model_that_answers_neither_yes_nor_no_stops_the_run_before_any_edit(registered, tokenizer, tmp_path,
                                                                                    monkeypatch):
    babbler = make_tiny_model("llama", vocab_size=49152, seed=3)   # random weights: its replies are noise
    loaded = LoadedModel(babbler, tokenizer, derive_profile(babbler))
    monkeypatch.setattr("keditlab.models.load_model", lambda name, device="auto", dtype=None, profile=None: loaded)
    spec = Spec(name="judged", model=ModelSpec(), methods=(MethodSpec("nudge"),), edits=EDITS,
                evaluate=EvalSpec(metrics=METRICS, protocols=("generation",), judge=JudgeSpec(model="babbler")))
    message = refused_before_editing(spec, tokenizer, tmp_path, monkeypatch)
    assert message.startswith("evaluate.judge.model:") and "neither yes nor no" in message


def test_a_judge_model_that_cannot_be_loaded_is_an_error_naming_the_field():
    with pytest.raises(JudgeError, match=r"^evaluate\.judge\.model: the judge model './no/such/judge' could not be loaded"):
        open_judge(JudgeSpec(model="./no/such/judge"), device="cpu")


# --- verdicts and prompts --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("reply,verdict", [("Yes.", "yes"), ("no", "no"), ("NO, it does not.", "no"),
                                           ("<think>yes or no? It says Rome.</think>\nNo.", "no"),
                                           ("Yesterday", "unreadable"), ("", "unreadable"), ("The answer: yes", "yes")])
def test_the_verdict_is_the_first_yes_or_no_word_of_the_reply(reply, verdict):
    assert read_verdict(reply) == verdict


def test_the_prompt_names_the_question_every_expected_answer_and_the_answer_given():
    prompt = JudgeQuestion("Who performed Hey Jude?", ("Madonna", "Madonna Ciccone"), " Madonna, in 1968.").prompt()
    assert "Question: Who performed Hey Jude?\n" in prompt
    assert "Expected answer: Madonna or Madonna Ciccone\n" in prompt
    assert "Answer given: Madonna, in 1968.\n" in prompt
    assert prompt.endswith("Reply with one word: yes or no.")
    assert open_judge(JudgeSpec()) is None   # `rule`: no judge


# --- stop rules ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("stops,answer", [(("sentence", "newline"), "Paris."), (("newline",), "Paris. It is"),
                                          (("sentence",), "Paris."), ((), "Paris. It is\nmore. text")])
def test_the_answer_is_cut_where_the_stop_rules_say(stops, answer):
    assert cut_answer(" Paris. It is\nmore. text", stops) == answer
    assert cut_answer("Rome\nand. more", ("sentence",)) == "Rome\nand."


def test_generation_stops_at_the_ends_the_rules_name_and_only_at_eos_or_the_length_without_rules(tokenizer):
    rows = [tokenizer.encode(text, add_special_tokens=False) for text in (" Paris. It", " Paris\nIt", " Paris")]
    width = max(map(len, rows))
    ids = torch.tensor([row + [tokenizer.pad_token_id] * (width - len(row)) for row in rows])
    for stops, done in [(("sentence", "newline"), [True, True, False]), (("sentence",), [True, False, False]),
                        (("newline",), [False, True, False]), ((), [False, False, False])]:
        assert AnswerStop(tokenizer, 0, stops)(ids).tolist() == done, stops


def test_measure_generates_and_cuts_with_the_spec_stop_rules(monkeypatch):
    seen = []

    def fixed(model, tokenizer, prompts, max_new_tokens=50, batch_size=16, done=None, **kwargs):
        seen.append(kwargs)
        return [" Rome. And\nmore"] * len(prompts)

    monkeypatch.setattr(measurement, "generate_answers", fixed)
    model, tok = make_tiny_model("llama"), WordTokenizer()
    case = EditCase("the city is in", "city", "rome", case_id="x")
    default = measure(model, tok, [case], EvalSpec(metrics=("reliability",), protocols=("generation",)))[0]
    unstopped = measure(model, tok, [case], EvalSpec(metrics=("reliability",), protocols=("generation",), stop=()))[0]
    assert seen == [{}, {"stops": ()}]
    assert default.probes[0].extra["answer"] == "Rome." and default.probes[0].value == 1.0
    assert unstopped.probes[0].extra["answer"] == "Rome. And\nmore" and unstopped.probes[0].value == 0.0
    assert "judge" not in default.probes[0].extra and "exact" not in default.probes[0].extra   # the rules: as before


def test_without_stop_rules_no_stopping_criterion_is_given(monkeypatch):
    given = []
    monkeypatch.setattr(answers, "greedy_generate", lambda *a, stop=None, **k: given.append(stop) or ["x"])
    answers.generate_answers(None, None, ["p"], stops=())
    answers.generate_answers(None, None, ["p"])
    assert given[0] is None and callable(given[1])


def test_stop_and_judge_are_written_back_only_when_not_the_defaults():
    edit = "edits: [{prompt: The sky is, subject: sky, target: green}]\n"
    plain = parse_spec("keditlab: 1\n" + edit)
    assert "stop" not in plain.to_spec_data()["evaluate"] and "judge" not in plain.to_spec_data()["evaluate"]
    spec = parse_spec("keditlab: 1\n" + edit + "evaluate:\n  stop: []\n  judge: {url: 'http://127.0.0.1:8000/v1', model: m, "
                      "api_key_env: K}\n")
    assert spec.evaluate.stop == ()
    assert spec.evaluate.judge == JudgeSpec(model="m", url="http://127.0.0.1:8000/v1", api_key_env="K")
    assert spec.to_spec_data()["evaluate"]["stop"] == []
    assert spec.to_spec_data()["evaluate"]["judge"] == {"model": "m", "url": "http://127.0.0.1:8000/v1", "api_key_env": "K",
                                                        "timeout": 30.0}
    assert parse_spec("keditlab: 1\n" + edit + "evaluate: {judge: {model: ./judge}}\n").evaluate.judge.kind == "model"
