"""`lmlab serve --engine vllm`: the same app and endpoints, with vLLM's engine generating.

vLLM is an optional dependency (Linux with a CUDA GPU; `pip install vllm`). The app still
tokenises and applies the chat template with our tokenizer and sends vLLM token ids, so prompts
are identical under both engines; vLLM's outputs are translated back into lmlab's `Delta` and
`RequestOutput`, so app.py cannot tell the engines apart (see the interface in runner.py).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from pathlib import Path

from lmlab.engine.engine import Completion, Delta, RequestOutput
from lmlab.engine.params import SamplingParams
from lmlab.errors import LmlabError
from lmlab.serve.protocol import ApiError

log = logging.getLogger("lmlab.serve")

DTYPES = {"auto": "auto", "fp32": "float32", "bf16": "bfloat16"}  # --weights -> vLLM's dtype (auto: the checkpoint's)


def import_vllm():
    try:
        import vllm
    except ImportError as e:
        raise LmlabError(f"--engine vllm needs vLLM, which is not installed ({e}); on a Linux machine with "
                         "a CUDA GPU: pip install vllm") from None
    return vllm


def vllm_sampling_params(p: SamplingParams, vllm):
    """Our SamplingParams as vLLM's. The names and semantics are vLLM's by design, so this is
    mostly a copy; what vLLM's engine lacks is refused rather than silently dropped."""
    from vllm.sampling_params import RequestOutputKind

    if p.best_of is not None and p.best_of > p.n:
        raise LmlabError(f"best_of={p.best_of} > n is not supported by the vllm engine; use --engine lmlab")
    if p.typical_p < 1:
        raise LmlabError("typical_p is not supported by the vllm engine; use --engine lmlab")
    if p.grammar is not None:  # vLLM's guided-decoding API differs between its versions
        raise LmlabError(f"output constraints ({p.grammar.kind}: response_format, guided_*, tools) are not passed "
                         "to the vllm engine; use --engine lmlab")
    return vllm.SamplingParams(
        n=p.n, max_tokens=p.max_tokens, min_tokens=p.min_tokens, temperature=p.temperature, top_p=p.top_p,
        top_k=p.top_k or -1,  # "off" is -1 in every vLLM version (0 only in recent ones)
        min_p=p.min_p, repetition_penalty=p.repetition_penalty, presence_penalty=p.presence_penalty,
        frequency_penalty=p.frequency_penalty, logit_bias=dict(p.logit_bias) or None, stop=list(p.stop),
        stop_token_ids=list(p.stop_token_ids), include_stop_str_in_output=p.include_stop_str_in_output,
        ignore_eos=p.ignore_eos, seed=p.seed, logprobs=p.logprobs, prompt_logprobs=p.prompt_logprobs,
        output_kind=RequestOutputKind.DELTA)  # each output carries only the new tokens


def _logprobs(d) -> dict[int, float] | None:
    """vLLM's {token id: Logprob} as ours, {token id: float}."""
    return None if d is None else {t: lp.logprob for t, lp in d.items()}


class OutputCollector:
    """Folds one request's stream of vLLM delta RequestOutputs into lmlab Deltas (one per token,
    as the lmlab engine streams them) and, at the end, one lmlab RequestOutput."""

    def __init__(self, request_id: str, prompt: list[int], params: SamplingParams):
        self.request_id, self.prompt = request_id, prompt
        self.outputs = [Completion(i, logprobs=[] if params.logprobs is not None else None) for i in range(params.n)]
        self.prompt_logprobs = None

    def push(self, out) -> list[Delta]:
        if out.prompt_logprobs is not None and self.prompt_logprobs is None:
            self.prompt_logprobs = [_logprobs(d) for d in out.prompt_logprobs]
        deltas = []
        for c in out.outputs:
            mine = self.outputs[c.index]
            ids, lps = list(c.token_ids), [_logprobs(d) for d in c.logprobs or []]
            mine.token_ids += ids
            mine.text += c.text
            mine.cumulative_logprob = c.cumulative_logprob or 0.0  # a running total, even in delta mode
            if mine.logprobs is not None:
                mine.logprobs += lps
            if c.finish_reason is not None:
                mine.finish_reason, mine.stop_reason = c.finish_reason, c.stop_reason
            # A delta may hold several tokens (vLLM merges outputs a slow consumer has not read yet);
            # the text and the finish reason go with the last of them.
            for j, t in enumerate(ids):
                last = j == len(ids) - 1
                deltas.append(Delta(self.request_id, c.index, t, c.text if last else "",
                                    lps[j] if j < len(lps) else None, c.finish_reason if last else None))
            if not ids and (c.text or c.finish_reason is not None):
                deltas.append(Delta(self.request_id, c.index, None, c.text, None, c.finish_reason))
        return deltas

    def result(self) -> RequestOutput:
        return RequestOutput(self.request_id, self.prompt, self.outputs, self.prompt_logprobs, finished=True)


class VllmRunner:
    """Runs requests as asyncio tasks on the server's event loop, each iterating vLLM's
    `AsyncLLMEngine.generate`; vLLM batches them continuously on the GPU."""

    def __init__(self, folder: Path, weights: str = "fp32", max_batch: int = 32):
        from lmlab.model.io.hf import read_config
        from lmlab.tokenizer import Tokenizer

        self.vllm = import_vllm()
        if weights not in DTYPES:
            raise LmlabError(f"--engine vllm takes --weights {' or '.join(DTYPES)} (vLLM quantises with its own "
                             f"methods), got {weights}")
        self.folder, self.dtype, self.max_batch = folder, DTYPES[weights], max_batch
        self.tokenizer, self.config = Tokenizer.from_folder(folder), read_config(folder)
        self.engine = None
        self._tasks: dict[str, asyncio.Task] = {}
        self._ids = itertools.count()
        self.waiting = 0  # vLLM queues internally; its own stats logger reports that
        self.steps = 0  # vLLM outputs received (one per request per engine step that produced tokens)
        self.step_errors = 0

    @classmethod
    def load(cls, model: str | None, weights: str = "fp32", max_batch: int = 32) -> "VllmRunner":
        """Check for vLLM first (before any conversion), then resolve the model to an HF folder."""
        from lmlab.model.io.resolve import resolve

        import_vllm()
        return cls(resolve(model), weights, max_batch)

    @property
    def running(self) -> int:
        return len(self._tasks)

    def start(self) -> "VllmRunner":
        args = self.vllm.AsyncEngineArgs(model=str(self.folder), dtype=self.dtype, max_num_seqs=self.max_batch)
        self.engine = self.vllm.AsyncLLMEngine.from_engine_args(args)
        return self

    def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        if self.engine is not None:
            self.engine.shutdown()

    def alive(self) -> bool:
        return self.engine is not None and not self.engine.errored

    def add(self, prompt: list[int], params: SamplingParams, stream: bool = True) -> tuple[str, asyncio.Queue]:
        rid = f"r{next(self._ids)}"
        q: asyncio.Queue = asyncio.Queue()
        try:
            sp = vllm_sampling_params(params, self.vllm)
        except (LmlabError, ValueError) as e:  # refused like the lmlab engine's: on the queue, as a 400
            q.put_nowait(("error", LmlabError(str(e))))
            return rid, q
        self._tasks[rid] = asyncio.create_task(self._generate(rid, prompt, params, sp, q, stream))
        return rid, q

    def abort(self, rid: str) -> None:
        task = self._tasks.pop(rid, None)
        if task is not None:
            task.cancel()  # vLLM's generate() aborts the request when its consumer is cancelled

    async def embed(self, inputs: list[list[int]]) -> list[list[float]]:
        raise ApiError(501, "embeddings are not served with --engine vllm (vLLM runs a generation model "
                            "here); run an lmlab serve with --engine lmlab for /v1/embeddings",
                       param="input", code="unsupported")

    async def _generate(self, rid, prompt, params, sp, q: asyncio.Queue, stream: bool) -> None:
        collector = OutputCollector(rid, prompt, params)
        try:
            async for out in self.engine.generate({"prompt_token_ids": prompt}, sp, rid):
                self.steps += 1
                for d in collector.push(out):
                    if stream:
                        q.put_nowait(("delta", d))
            q.put_nowait(("done", collector.result()))
        except asyncio.CancelledError:
            raise
        except ValueError as e:  # vLLM's validation errors (VLLMValidationError is a ValueError)
            q.put_nowait(("error", LmlabError(str(e))))
        except Exception as e:  # noqa: BLE001 - handed to the request's handler as a 500
            log.exception("vLLM request %s failed", rid)
            self.step_errors += 1
            q.put_nowait(("error", e))
        finally:
            self._tasks.pop(rid, None)
