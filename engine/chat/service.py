"""The chat service behind ``compression-engine chat``: a long-lived process that loads several models once
(teacher, student, 4-bit student…) and streams their answers as JSON-lines events.

Commands (stdin, one JSON object a line; see engine.contract.protocol)::

    {"type": "load", "model": "student", "source": "demo:student", "load_in_4bit": false}
    {"type": "generate", "request_id": "r1", "model": "student", "messages": [{"role": "user", "content": "Hi"}],
     "sampling": {"greedy": true, "temperature": 0.7, "top_p": 0.9, "max_new_tokens": 128, "seed": 0}}
    {"type": "generate", "request_id": "r2", "model": "teacher", "messages": [...], "draft": "student"}
    {"type": "stop", "request_id": "r1"}       (no request_id: stop every generation)
    {"type": "unload", "model": "student"}
    {"type": "score", "id": "s1", "prediction": "The dogs are running", "reference": "the dog is running"}
    {"type": "quit"}

Events (stdout): ``progress`` while loading, ``loaded`` {model, parameters, dtype, memory_bytes, quantized, …},
``token`` {request_id, model, text, tokens_per_s, draft_acceptance}, ``done`` {request_id, model,
status: finished|stopped, prompt_tokens, completion_tokens, ttft_s, tokens_per_s, text, draft}, ``score`` {id,
rougeL} (the evaluation's own ROUGE-L from engine.evaluation.scores, so the arena and the evaluation tab agree),
``error`` {message, request_id}, ``log``.

Threads: one reader thread turns stdin lines into a queue; the main thread dispatches; each load and each
generation runs in its own thread (transformers' TextIteratorStreamer), so two models answer concurrently and a
``stop`` is handled while tokens flow. Bad lines, unknown models and failed loads become ``error`` events and the
service keeps serving. EOF on stdin stops everything and exits cleanly.

A generate with ``draft`` decodes with another loaded model as the draft (transformers' assisted generation, as
the evaluation measures it: engine/evaluation/drafting.py): both models' locks are held for the answer (taken in
name order, so two requests drafting for each other cannot deadlock), and the tokens and the done event carry the
share of draft tokens kept so far. Different tokenizers draft for greedy answers only: transformers' sampling path
for them cuts the draft's output layer in place, which would change that model for its own answers.
"""
from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from typing import Any

from engine.chat.held import LoadedModel, Request
from engine.chat.prompt_limits import check_characters, fit_answer, limits_of
from engine.chat.requests import (
    check_fields,
    check_messages,
    draft_field,
    load_fields,
    sampling_kwargs,
    score_texts,
    text_field,
)
from engine.chat.speculative import lock_all, share, speed, stop_criteria, wait_unless_stopped
from engine.core.context import EngineError
from engine.models.memory import loaded_parameters
from engine.contract.protocol import EventWriter

log = logging.getLogger(__name__)

_QUIT_JOIN_S = 10.0


def _failure(what: str, exc: BaseException, doing: str) -> str:
    """One sentence for a failed load or generation: out of memory says what ran out (the service goes on,
    with the failed work's memory released); anything else quotes its cause, cut at a word."""
    from engine.models import out_of_memory
    from engine.models.source_checks import brief

    if out_of_memory.is_out_of_memory(exc):
        out_of_memory.release(exc)
        return out_of_memory.sentence(exc, doing, "unload a model, use a shorter prompt or close other programs")
    return f"{what}: {type(exc).__name__}: {brief(exc, 200)}"


def render_prompt(tokenizer: Any, messages: list[dict]) -> str:
    """The model's own chat template, ending with the assistant turn's opening; a plain fallback without one."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    lines = [f"{m['role']}: {m['content']}" for m in messages]
    return "\n".join(lines) + "\nassistant:"


class ChatService:
    """Holds the loaded models and the running generations; ``handle`` dispatches one command."""

    def __init__(self, writer: EventWriter, device: str = "auto") -> None:
        self.writer = writer
        self.device = device
        self.models: dict[str, LoadedModel] = {}
        self.loading: dict[str, threading.Event] = {}
        self.requests: dict[str, Request] = {}
        self.threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._seed_lock = threading.Lock()

    # -------------------------------------------------------------- dispatch
    def handle(self, command: dict) -> bool:
        """Run one parsed command; False once the service should quit."""
        kind = command["type"]
        handler = {"load": self._on_load, "generate": self._on_generate, "stop": self._on_stop,
                   "unload": self._on_unload, "score": self._on_score, "quit": None}.get(kind, False)
        if handler is False:
            self._error(f"the chat service does not handle {kind!r} commands; use load, generate, stop, unload, "
                        "score or quit.", command)
            return True
        try:
            check_fields(command)  # every field's JSON type, before the handler reads any of them
            if handler is None:
                return False  # quit
            handler(command)
        except EngineError as exc:
            self._error(str(exc), command)
        except Exception as exc:  # a bug: one error event, the service goes on; the trace only with -v
            log.debug("command %s failed", kind, exc_info=True)
            self._error(f"bad {kind} command: {type(exc).__name__}: {exc}", command)
        return True

    def _error(self, message: str, command: dict | None = None) -> None:
        command = command if isinstance(command, dict) else {}
        request_id, model = command.get("request_id", ""), command.get("model", "")
        self.writer.emit("error", message=message, request_id=request_id if isinstance(request_id, str) else "",
                         model=model if isinstance(model, str) else "", stage="chat", detail="")

    def _spawn(self, target: Any, *args: Any) -> threading.Thread:  # loads and generations: one thread each
        thread = threading.Thread(target=target, args=args, daemon=True)
        self.threads = [t for t in self.threads if t.is_alive()] + [thread]
        thread.start()
        return thread

    # -------------------------------------------------------------- score
    def _on_score(self, command: dict) -> None:
        """ROUGE-L of ``prediction`` against ``reference`` with the evaluation's own function (stemmed, Unicode
        tokens): the studio cannot import rouge_score, and a second implementation would disagree with it."""
        from engine.evaluation.scores import rouge_l

        prediction, reference = score_texts(command)
        score_id = command.get("id", "")

        def work() -> None:  # off the dispatcher: a stop sent meanwhile is still handled at once
            self.writer.emit("score", id=score_id, rougeL=rouge_l(prediction, reference))

        self._spawn(work)

    # -------------------------------------------------------------- load / unload
    def _on_load(self, command: dict) -> None:
        name, source, load_in_4bit = load_fields(command)
        with self._lock:
            if name in self.loading:
                raise EngineError(f"model {name!r} is already being loaded.")
            self.loading[name] = threading.Event()
        self._spawn(self._load, name, source, load_in_4bit, command)

    def _load(self, name: str, source: str, load_in_4bit: bool, command: dict) -> None:
        try:
            self.models[name] = self._load_model(name, source, load_in_4bit)
        except EngineError as exc:
            self._error(str(exc), command)
        except Exception as exc:  # a model that breaks while loading must not take the service down
            log.debug("loading %s failed", source, exc_info=True)
            self._error(_failure(f"cannot load {source}", exc, f"loading {source}"), command)
        finally:
            with self._lock:
                self.loading.pop(name).set()

    def _load_model(self, name: str, source: str, load_in_4bit: bool) -> LoadedModel:
        from engine.core import heartbeat
        from engine.models import memory
        from engine.contract.spec import ModelSpec
        from engine.models.loading import (
            check_source,
            load_model,
            load_tokenizer,
            pick_device,
            pick_dtype,
        )

        check_source(source)  # not a model, a damaged config, no tokenizer: one sentence, before any weight
        device = pick_device(self.device)
        dtype = pick_dtype("auto", device)
        if name in self.models:
            self._unload(name)  # replacing a model frees the old one first
        estimate = memory.estimate_source_bytes(source, dtype, load_in_4bit)
        if estimate is not None:
            memory.check_fits([(name, estimate)], device)
        stage = f"load {name}"
        self.writer.progress(stage, 0, 2, 0.0)
        start = time.perf_counter()
        spec = ModelSpec(source=source, load_in_4bit=load_in_4bit)
        tokenizer = load_tokenizer(spec)
        self.writer.progress(stage, 1, 2, time.perf_counter() - start)

        def still_loading(elapsed: float) -> None:  # a GGUF unpack or a large load: the arena hears it is alive
            self.writer.emit("progress", stage=stage, model=name, step=1, total=2, fraction=0.5,
                             elapsed_s=round(time.perf_counter() - start, 2), eta_s=None, unit="step")

        with heartbeat.repeating(still_loading):
            if load_in_4bit:  # the quantizer's path: layers the CPU kernel cannot run stay full precision
                from engine.contract.spec import QuantizeSpec
                from engine.quantization.four_bit import quantize_in_memory

                model, _ = quantize_in_memory(spec, QuantizeSpec(compute_dtype=str(dtype).replace("torch.", "")),
                                              device)
            else:
                model = load_model(spec, device)
        elapsed = time.perf_counter() - start
        self.writer.progress(stage, 2, 2, elapsed)
        quantized = bool(getattr(model, "is_loaded_in_4bit", False))
        self.writer.emit("loaded", model=name, source=source, device=device,
                         parameters=loaded_parameters(model), dtype=str(model.dtype),
                         memory_bytes=int(model.get_memory_footprint()), quantized=quantized,
                         estimate_bytes=estimate, load_s=round(elapsed, 3),
                         chat_template=bool(getattr(tokenizer, "chat_template", None)))
        return LoadedModel(name, source, model, tokenizer, device, limits_of(model, tokenizer))

    def _on_unload(self, command: dict) -> None:
        name = text_field(command, "model", "unload")
        if name not in self.models:
            raise EngineError(f"model {name!r} is not loaded; loaded: {', '.join(self.models) or 'none'}.")
        self._unload(name)
        self.writer.emit("log", level="info", message=f"unloaded {name}", model=name, action="unloaded")

    def _unload(self, name: str) -> None:
        for req in list(self.requests.values()):
            if req.model == name:
                req.stop.set()
        loaded = self.models.pop(name)
        with loaded.lock:  # wait for its generation to end before freeing the weights
            loaded.model = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass

    # -------------------------------------------------------------- generate / stop
    def _on_generate(self, command: dict) -> None:
        request_id = text_field(command, "request_id", "generate")
        if request_id in self.requests:
            raise EngineError(f"request {request_id!r} is still running; use a new request_id.")
        name = text_field(command, "model", "generate")
        messages = check_messages(command.get("messages"))  # the request itself first: its mistakes are
        sampling = sampling_kwargs(command.get("sampling"))  # said whether or not the model is loaded
        if name not in self.models and name not in self.loading:
            raise EngineError(f"model {name!r} is not loaded; loaded: {', '.join(self.models) or 'none'}.")
        draft = draft_field(command, name, [*self.models, *(m for m in self.loading if m not in self.models)])
        req = Request(request_id, name, draft=draft)
        self.requests[request_id] = req
        req.thread = self._spawn(self._generate, req, messages, sampling, command)

    def _on_stop(self, command: dict) -> None:
        request_id = text_field(command, "request_id", "stop") if command.get("request_id") is not None else None
        if request_id:
            req = self.requests.get(request_id)
            if req is None:
                raise EngineError(f"no running request {request_id!r} to stop.")
            req.stop.set()
            return
        for req in list(self.requests.values()):
            req.stop.set()

    def _generate(self, req: Request, messages: list[dict], sampling: dict, command: dict) -> None:
        try:
            pending = self.loading.get(req.model)
            if pending is not None and not wait_unless_stopped(pending.wait, req):
                return self._stopped_before_start(req)  # a generate sent right after its load waits for it
            loaded = self.models.get(req.model)
            if loaded is None:
                raise EngineError(f"model {req.model!r} is not loaded (its load failed or it was unloaded).")
            check_characters(loaded.limits, messages, req.model)  # before any tokenizing: a 1 MB prompt is refused
            drafter = self._drafter(req, sampling) if req.draft else None
            if req.draft and drafter is None:
                return self._stopped_before_start(req)
            held = lock_all([m for m in (loaded, drafter) if m is not None], req)
            if held is None:
                return self._stopped_before_start(req)  # queued behind another answer of these models
            try:
                if req.stop.is_set():  # stopped while it waited: no prefill for an answer nobody wants
                    return self._stopped_before_start(req)
                self.writer.emit("done", **self._stream(loaded, req, messages, sampling, drafter))
            finally:
                for model in held:
                    model.lock.release()
        except EngineError as exc:
            self._error(str(exc), command)
        except Exception as exc:
            log.debug("generation %s failed", req.request_id, exc_info=True)
            self._error(_failure("generation failed", exc, f"generating with {req.model!r}"), command)
        finally:
            self.requests.pop(req.request_id, None)

    def _drafter(self, req: Request, sampling: dict) -> LoadedModel | None:
        """The loaded draft model of ``req`` (waiting for its load); None when the request was stopped meanwhile."""
        from engine.evaluation.drafting import same_tokenizer

        pending = self.loading.get(req.draft or "")
        if pending is not None and not wait_unless_stopped(pending.wait, req):
            return None
        drafter = self.models.get(req.draft or "")
        if drafter is None:
            raise EngineError(f"draft model {req.draft!r} is not loaded (its load failed or it was unloaded).")
        if sampling["kwargs"]["do_sample"] and not same_tokenizer(self.models[req.model].tokenizer,
                                                                  drafter.tokenizer):
            raise EngineError(f"{req.draft!r} tokenizes differently from {req.model!r}: it can draft for greedy "
                              "answers only; switch sampling to greedy or pick a draft with the same tokenizer.")
        return drafter

    def _stopped_before_start(self, req: Request) -> None:
        self.writer.emit("done", request_id=req.request_id, model=req.model, status="stopped", prompt_tokens=0,
                         completion_tokens=0, ttft_s=None, tokens_per_s=None, text="")

    def _stream(self, loaded: LoadedModel, req: Request, messages: list[dict], sampling: dict,
                drafter: LoadedModel | None = None) -> dict:
        """Generate in a worker thread and forward each decoded piece as a ``token`` event (with the speed so far,
        and with a draft model the share of its tokens kept so far)."""
        import torch
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        from engine.evaluation.drafting import DraftCount, counting, draft_kwargs

        tokenizer = loaded.tokenizer
        inputs = tokenizer(render_prompt(tokenizer, messages), return_tensors="pt",
                           add_special_tokens=False).to(loaded.device)
        # inputs["input_ids"]: (1, prompt_len); the prompt must fit the context, the answer is cut to what is left
        wanted = sampling["kwargs"]["max_new_tokens"]
        allowed, warning = fit_answer(loaded.limits, int(inputs["input_ids"].shape[1]), wanted, loaded.name)
        if warning:
            self.writer.emit("log", level="warning", message=warning, request_id=req.request_id, model=loaded.name)
        kwargs = {**sampling["kwargs"], "max_new_tokens": allowed}
        count = DraftCount()
        if drafter is not None:
            kwargs.update(draft_kwargs(tokenizer, drafter.model, drafter.tokenizer))
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        stamps: list[tuple[float, int]] = []
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        result: dict[str, Any] = {}

        def work() -> None:
            try:
                with torch.no_grad(), counting(loaded.model, count) if drafter else contextlib.nullcontext():
                    result["ids"] = loaded.model.generate(
                        **inputs, **kwargs, streamer=streamer, pad_token_id=pad,
                        stopping_criteria=StoppingCriteriaList([stop_criteria(req.stop, stamps)]))
            except Exception as exc:  # noqa: BLE001 - re-raised in the request thread, after unblocking the streamer
                result["error"] = exc
                streamer.end()

        with self._seed_lock:  # the seed is global in torch: set it just before this generation starts
            if sampling["seed"] is not None:
                torch.manual_seed(int(sampling["seed"]))
            start = time.perf_counter()
            worker = threading.Thread(target=work, daemon=True)
            worker.start()
        pieces: list[str] = []
        for text in streamer:
            if text:
                pieces.append(text)
                live = {"draft_acceptance": share(count)} if drafter else {}
                self.writer.emit("token", request_id=req.request_id, model=loaded.name, text=text,
                                 tokens_per_s=speed(list(stamps)), **live)
        worker.join()
        if "error" in result:
            raise result["error"]
        prompt_tokens = int(inputs["input_ids"].shape[1])  # inputs: (1, prompt_len)
        ttft = stamps[0][0] - start if stamps else None
        draft = None if drafter is None else {"model": drafter.name, "acceptance": share(count),
                                              "proposed": count.proposed, "accepted": count.accepted}
        return {"request_id": req.request_id, "model": loaded.name,
                "status": "stopped" if req.stop.is_set() else "finished", "prompt_tokens": prompt_tokens,
                "completion_tokens": int(result["ids"].shape[1]) - prompt_tokens,
                "ttft_s": None if ttft is None else round(ttft, 4), "tokens_per_s": speed(stamps),
                "text": "".join(pieces), **({"draft": draft} if drafter else {})}

    # -------------------------------------------------------------- shutdown
    def shutdown(self) -> None:
        """Stop every generation and wait (bounded) for the worker threads."""
        for req in list(self.requests.values()):
            req.stop.set()
        deadline = time.monotonic() + _QUIT_JOIN_S
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
