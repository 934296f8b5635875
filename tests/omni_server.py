"""A local stand-in for speech-capable OpenAI-compatible servers (vLLM-Omni, SGLang-Omni).

Neither runs on a CPU, so their wire shapes (read from their sources) are reproduced here:
SSE chunks, usage, `[DONE]`, audio in the stream, and injected faults. Every request body
is recorded for tests to assert on. Plain `vllm serve` is tested against the real thing.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal

import numpy as np
import soundfile

MODEL = "Qwen/Qwen3-Omni-30B-A3B-Instruct"
RATE = 24_000
Shape = Literal["vllm-omni", "sglang-omni", "text-only"]
Fault = Literal[None, "400", "500", "refuse-audio", "refuse-mm-kwargs", "stall", "cut", "error-event", "no-finish"]


class OmniServer:
    """Example::

        with OmniServer("vllm-omni") as server:
            backend = OpenAIBackend(OpenAIOptions(api_base=server.url))
            ...
            server.requests[-1]["speaker"]
    """

    def __init__(self, shape: Shape = "vllm-omni"):
        self.shape: Shape = shape
        self.fault: Fault = None
        self.words = ["Hello", " from", " a", " fixture", " server", "."]
        self.audio_chunk_seconds = [0.32, 1.0, 1.0]
        self.chunk_delay_s = 0.01
        self.requests: list[dict] = []
        self.disconnected = threading.Event()
        self._http = _QuietServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}/v1"

    @property
    def audio_seconds(self) -> float:
        return sum(self.audio_chunk_seconds)

    def __enter__(self) -> OmniServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._http.shutdown()
        self._http.server_close()

    # -- the replies -------------------------------------------------------------------------

    def chunks(self, body: dict) -> list[dict | str]:
        """The SSE payloads of one streamed reply, in order."""
        wants_audio = "audio" in (body.get("modalities") or ([] if self.shape == "sglang-omni" else ["audio"]))
        speaks = wants_audio and self.shape != "text-only"
        starts = np.cumsum([0, *self.audio_chunk_seconds])
        audio = [_wav_base64(start, seconds) for start, seconds in zip(starts, self.audio_chunk_seconds)] if speaks else []
        head = {"id": "chatcmpl-fixture", "object": "chat.completion.chunk", "created": int(time.time()), "model": MODEL}
        out: list[dict | str] = []
        for i, word in enumerate(self.words):
            delta = {"role": "assistant", "content": word} if i == 0 else {"content": word}
            chunk = {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            if self.shape == "vllm-omni":
                chunk["modality"] = "text"
            out.append(chunk)
            if i < len(audio):  # speech interleaves with text, as with async chunking
                out.append(self._audio_chunk(head, audio[i]))
        out.extend(self._audio_chunk(head, data) for data in audio[len(self.words):])
        finish = {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        if self.shape == "vllm-omni":
            finish["modality"] = "text"
        out.append(finish)
        usage = {"prompt_tokens": 17, "completion_tokens": len(self.words), "total_tokens": 17 + len(self.words)}
        if (body.get("stream_options") or {}).get("include_usage"):
            out.append({**head, "choices": [], "usage": usage})
        out.append("[DONE]")
        return out

    def _audio_chunk(self, head: dict, data: str) -> dict:
        if self.shape == "sglang-omni":
            return {**head, "choices": [{"index": 0, "delta": {"audio": {"id": "audio-fixture", "data": data}},
                                         "finish_reason": None}]}
        # vLLM-Omni: base64 WAV in delta.content, and a finish_reason that must not end the turn.
        return {**head, "modality": "audio", "usage": {"prompt_tokens": 17, "completion_tokens": 0, "total_tokens": 17},
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": data}, "finish_reason": "stop"}]}

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                if self.path.rstrip("/").endswith("/models"):
                    return self._json(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
                self._json(404, {"detail": "Not Found"})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                fault = server.fault
                if fault == "400":
                    return self._json(400, _error("Invalid speaker 'nobody'. Supported: aiden, chelsie, ethan", 400))
                if fault == "500":
                    return self._json(500, _error("EngineCore encountered an issue", 500))
                if fault == "refuse-audio" and "audio" in (body.get("modalities") or []):
                    return self._json(400, _error("Unsupported output modalities: ['audio']", 400))
                if fault == "refuse-mm-kwargs" and "mm_processor_kwargs" in body:  # what `vllm serve` 0.32 says
                    return self._json(400, _error("Per-request mm_processor_kwargs are disabled by default. Use "
                                                  "--trust-request-mm-kwargs only when clients are trusted.", 400))
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                if fault == "stall":
                    time.sleep(3)
                try:
                    for i, payload in enumerate(server.chunks(body)):
                        if fault in ("cut", "error-event", "no-finish") and i == 3:
                            return self._break(fault)
                        self._send(payload)
                        time.sleep(server.chunk_delay_s)
                    self._end()
                except (BrokenPipeError, ConnectionResetError):
                    server.disconnected.set()

            def _break(self, fault: str) -> None:
                if fault == "error-event":
                    self._send(_error("The engine died mid-reply", 500))
                    self._send("[DONE]")
                    return self._end()
                if fault == "no-finish":
                    return self._end()  # a clean end of body, but no finish_reason and no [DONE]
                self.wfile.flush()
                self.connection.close()  # "cut": no terminating chunk, the client sees a broken body
                self.close_connection = True

            def _send(self, payload: dict | str) -> None:
                data = payload if isinstance(payload, str) else json.dumps(payload)
                raw = f"data: {data}\n\n".encode()
                self.wfile.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")
                self.wfile.flush()

            def _end(self) -> None:
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

            def _json(self, status: int, payload: dict) -> None:
                raw = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        return Handler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # clients that hang up (Stop, faults) are what the tests do on purpose


def _error(message: str, code: int) -> dict:
    kind = "BadRequestError" if code < 500 else "InternalServerError"
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _wav_base64(start_s: float, seconds: float) -> str:
    """One piece of a continuous 220 Hz tone, so the pieces join without a seam."""
    t = (round(start_s * RATE) + np.arange(round(seconds * RATE))) / RATE
    samples = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, RATE, format="WAV", subtype="PCM_16")
    return base64.b64encode(buffer.getvalue()).decode()
