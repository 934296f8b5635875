"""The app's command line: every flag, with the defaults that depend on where the app runs (a Space, a studio, this
machine). ``settings.py`` turns the parsed flags into what the backends and Gradio take."""

from __future__ import annotations

import argparse
import json
import os

from backends.checkpoints import INSTRUCT, TINY

BACKENDS = ("transformers", "vllm", "hybrid", "openai")

DEFAULT_PORT = 7860
DEFAULT_API_BASE = "http://127.0.0.1:8000/v1"
UPLOAD_LIMIT = "200mb"
"""Gradio refuses bigger uploads before they reach the disk (the media limits say the same)."""
THIS_MACHINE_ONLY = ("127.0.0.1", "localhost", "::1")


def default_server_name() -> str:
    """Listen on this machine only, unless the platform routes traffic to us (and says so)."""
    if os.environ.get("GRADIO_SERVER_NAME"):
        return os.environ["GRADIO_SERVER_NAME"]
    hosted = os.environ.get("SYSTEM") == "spaces" or "MODELSCOPE_ENVIRONMENT" in os.environ
    return "0.0.0.0" if hosted else "127.0.0.1"


def default_data_dir() -> str | None:
    """$QWEN_OMNI_DATA_DIR, else a Space's persistent storage (/data, when the Space has it), else None."""
    if os.environ.get("QWEN_OMNI_DATA_DIR"):
        return os.environ["QWEN_OMNI_DATA_DIR"]
    on_space = os.environ.get("SYSTEM") == "spaces"
    return "/data" if on_space and os.path.isdir("/data") and os.access("/data", os.W_OK) else None


def parse_args(argv: list[str] | None = None, *, default_checkpoint: str = INSTRUCT, tiny: str = TINY,
               default_port: int = DEFAULT_PORT, description: str | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--checkpoint", "--checkpoint-path", dest="checkpoint", default=None,
                        help=f"hub id or local folder (default: {default_checkpoint} with a GPU, "
                        f"else '{tiny}', a tiny random-weight model built offline)")
    parser.add_argument("--backend", choices=BACKENDS, default="transformers",
                        help="transformers: in this process, speaks (default) | vllm: vLLM in this process, text | "
                        "hybrid: vLLM text + Transformers talker | openai: any OpenAI-compatible server")
    parser.add_argument("--server-name", default=default_server_name(),
                        help="default 127.0.0.1 (this machine only); 0.0.0.0 on Spaces and ModelScope studios")
    parser.add_argument("--server-port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", default_port)))
    parser.add_argument("--flash-attn2", action="store_true", help="force flash_attention_2 (default: auto)")
    parser.add_argument("--attn-implementation", default="auto", help="auto | flash_attention_2 | sdpa | eager")
    parser.add_argument("--no-audio", action="store_true", help="never speak; drops the talker (~10 GB less)")
    parser.add_argument("--max-speech-seconds", type=float, default=None,
                        help="cap on one spoken reply (default 300 s; 4 s for the tiny model)")
    parser.add_argument("--cpu-only", action="store_true", help="run on the CPU even if a GPU is present")
    parser.add_argument("--no-compile", action="store_true",
                        help="transformers: skip torch.compile/CUDA graphs (starts in seconds, generates slower)")
    parser.add_argument("--static-cache-tokens", type=int, default=8192,
                        help="transformers, compiled: prompt + reply tokens of the fast path (longer turns run eagerly)")
    parser.add_argument("--batch-slots", type=int, default=None,
                        help="transformers: replies decoded together, each in a cache slot of --static-cache-tokens "
                             "(about 1.05 GB per slot at 8192 on the 30B model); hybrid: replies the talker speaks "
                             "together; default 8 on a GPU, 1 on the CPU (one at a time)")
    parser.add_argument("--prepare-processes", type=int, default=0,
                        help="transformers with --batch-slots > 1: worker processes that decode the replies' media and "
                             "run the processor side by side (default 0: threads)")
    parser.add_argument("--no-compile-batched-steps", action="store_true",
                        help="transformers and hybrid, compiled: capture the batched steps (several replies at once) "
                             "without torch.compile: minutes less warm-up on the 30B model, slower steps")
    parser.add_argument("--no-fused-moe", action="store_true",
                        help="transformers, compiled: the thinker's decode steps keep transformers' grouped_mm experts "
                             "instead of our Triton kernels")
    parser.add_argument("--no-decode-attention", action="store_true",
                        help="transformers, compiled: decode steps attend with sdpa over every slot of the static "
                             "cache instead of our Triton kernel, which reads only the filled ones")
    parser.add_argument("--no-fused-projections", action="store_true",
                        help="transformers, compiled: attention layers compute query, key and value in three matrix "
                             "products (transformers' own) instead of one")
    parser.add_argument("--no-encoder-graphs", action="store_true",
                        help="transformers, compiled: the audio and vision encoders run eagerly instead of padded "
                             "into captured sizes (CUDA graphs)")
    parser.add_argument("--encoder-cache-mb", type=int, default=256,
                        help="transformers: keep the audio and vision encoders' outputs for files already seen, so "
                             "later turns don't encode them again (0: off)")
    parser.add_argument("--max-gpu-memory", type=float, default=None, metavar="GIB",
                        help="transformers: use at most this much of each GPU, keep the rest of the model in CPU "
                             "memory (small GPUs; slow, no compile)")
    parser.add_argument("--share", action="store_true", help="public Gradio share link (off by default)")
    parser.add_argument("--data-dir", default=default_data_dir(), metavar="DIR",
                        help="keep team studies (answers, blind votes, leaderboards) here across restarts (default "
                        "$QWEN_OMNI_DATA_DIR; on a Space with persistent storage, /data; else none: no team studies)")
    parser.add_argument("--admin", action="append", default=[], metavar="USER",
                        help="a login (--auth) that may create and export team studies (repeatable; none named: "
                        "anyone while the app listens on this machine only, no one once others can reach it)")
    parser.add_argument("--feedback-file", default=os.environ.get("QWEN_OMNI_FEEDBACK"), metavar="PATH",
                        help="turn on 👍/👎 and comments on replies, appended to this JSONL file")
    parser.add_argument("--auth", action="append", metavar="USER:PASSWORD",
                        help="require a login (repeatable; or $QWEN_OMNI_AUTH / $QWEN_OMNI_AUTH_FILE)")
    parser.add_argument("--serve-api-key", action="append", metavar="KEY",
                        help="an API key this app's OpenAI API (/v1/...) takes as 'Authorization: Bearer KEY' "
                        "(repeatable; or $QWEN_OMNI_API_KEY, comma-separated); with a key set, callers need one "
                        "(or, with --auth, a logged-in page's cookie)")
    parser.add_argument("--inbrowser", action="store_true", help="open a browser tab on start")
    parser.add_argument("--mcp", action="store_true",
                        default=os.environ.get("GRADIO_MCP_SERVER", "").lower() == "true",
                        help="also serve the public API as MCP tools (Gradio's MCP server, streamable HTTP at "
                        "/gradio_api/mcp/; or $GRADIO_MCP_SERVER=true)")
    server = parser.add_argument_group("--backend openai (and hybrid with a server)")
    server.add_argument("--api-base", default=os.environ.get("OPENAI_BASE_URL"),
                        help="the server's /v1 URL (default http://127.0.0.1:8000/v1); with --backend hybrid: "
                        "take the text from this vLLM server")
    server.add_argument("--api-key", default=None, help="default: $OPENAI_API_KEY")
    server.add_argument("--compare-api-base", default=None, metavar="URL",
                        help="a second engine for Chat's 'Compare replies': an OpenAI-compatible server (vllm serve, "
                        "vLLM-Omni), answering beside the main backend")
    server.add_argument("--model", default=None, help="served model name (default: the server's first)")
    server.add_argument("--server-speech", choices=["auto", "on", "off"], default="auto",
                        help="ask the server for speech (vLLM-Omni, SGLang-Omni); auto falls back to text")
    server.add_argument("--video-audio", choices=["auto", "processor", "separate"], default="auto",
                        help="send a video's sound via mm_processor_kwargs, or as its own audio part "
                        "(auto: the first, the second if the server refuses it)")
    engine = parser.add_argument_group("--backend vllm | hybrid")
    engine.add_argument("-tp", "--tensor-parallel-size", type=int, default=None, help="default: every visible GPU")
    engine.add_argument("--gpu-memory-utilization", type=float, default=None,
                        help="vLLM's share of each GPU (default 0.9; hybrid on one GPU: what the talker leaves)")
    engine.add_argument("--max-model-len", type=int, default=None, help="default 32768 (4096 for the tiny model)")
    engine.add_argument("--max-num-seqs", type=int, default=8, help="requests batched together (= users at once)")
    engine.add_argument("--limit-mm-per-prompt", type=json.loads, default=None,
                        help='media per conversation, e.g. \'{"image": 3, "audio": 3, "video": 3}\'')
    engine.add_argument("--enforce-eager", action="store_true", help="no torch.compile/CUDA graphs (faster start)")
    # Accepted for the official web_demo.py command lines: Transformers is our speaking backend
    # and speech is on whenever the checkpoint can speak.
    parser.add_argument("--use-transformers", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--generate-audio", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.use_transformers:
        args.backend = "transformers"
    if args.flash_attn2:
        args.attn_implementation = "flash_attention_2"
    return args
