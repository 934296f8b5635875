"""Qwen3-Omni web app: chat with text, images, audio and video; hear the reply.

    python app.py                                   # GPU: Qwen3-Omni-30B-A3B-Instruct; no GPU: tiny random model
    python app.py -c Qwen/Qwen3-Omni-30B-A3B-Thinking
    python app.py --backend vllm -tp 2              # fast text from vLLM in this process
    python app.py --backend hybrid                  # vLLM writes, the Transformers talker speaks
    python app.py --backend hybrid --api-base http://gpu-box:8000/v1   # …with the text from a vLLM server
    python app.py --backend openai --api-base http://gpu-box:8000/v1   # a `vllm serve` / vLLM-Omni server
    python app.py --mcp                             # the API as MCP tools too: http://127.0.0.1:7860/gradio_api/mcp/

OpenAI's API is served on the same port (api/): ws://127.0.0.1:7860/v1/realtime (the Realtime protocol) and
http://127.0.0.1:7860/v1/chat/completions, /v1/models; --serve-api-key KEY makes it ask callers for a key.

The official demo's command lines work too (`python app.py -c <ckpt> --use-transformers
--generate-audio --flash-attn2`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading

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
               default_port: int = DEFAULT_PORT) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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


def backend_options(args: argparse.Namespace, random_weights: bool) -> dict:
    """The options of ``args.backend``, as ``backends.build_backend`` takes them."""
    server = {"api_base": args.api_base or DEFAULT_API_BASE, "api_key": args.api_key, "model": args.model,
              "speech": "off" if args.no_audio else args.server_speech, "video_audio": args.video_audio}
    if args.backend == "openai":
        return server
    talker = {
        "audio_output": not args.no_audio,
        "attn_implementation": args.attn_implementation,
        "device": "cpu" if args.cpu_only else "auto",
        "max_speech_seconds": args.max_speech_seconds or (4.0 if random_weights else 300.0),
        "compile": "off" if args.no_compile else "auto",
        "static_cache_tokens": args.static_cache_tokens,
        "batch_slots": args.batch_slots,
        "compile_batched_steps": not args.no_compile_batched_steps,
        "max_gpu_memory_gib": args.max_gpu_memory,
        "encoder_cache_mb": args.encoder_cache_mb,
    }
    if args.backend == "transformers":
        # The page opens at once; the header shows the load.
        return {**talker, "load_in_background": True, "fused_moe": not args.no_fused_moe,
                "prepare_processes": args.prepare_processes,
                "decode_attention": not args.no_decode_attention, "fused_projections": not args.no_fused_projections,
                "encoder_graphs": not args.no_encoder_graphs}
    engine = {
        "tensor_parallel_size": args.tensor_parallel_size,
        "gpu_memory_utilization": args.gpu_memory_utilization,
        "max_model_len": args.max_model_len or (4096 if random_weights else 32768),
        "max_num_seqs": args.max_num_seqs,
        # The tiny model on a CPU starts in half the time without torch.compile.
        "enforce_eager": args.enforce_eager or random_weights,
    }
    if args.limit_mm_per_prompt:
        engine["limit_mm_per_prompt"] = args.limit_mm_per_prompt
    if args.backend == "hybrid":
        return {"engine": engine, "talker": talker, **({"server": server} if args.api_base else {})}
    return engine


def launch_settings(args: argparse.Namespace) -> dict:
    """``Blocks.launch`` keywords: where to listen, who may enter, how big an upload may be."""
    from ui.i18n import I18N

    return {
        "server_name": args.server_name,
        "server_port": args.server_port,
        "share": args.share,
        "inbrowser": args.inbrowser,
        "show_error": True,  # messages reach the user; tracebacks stay in the server log
        "max_file_size": UPLOAD_LIMIT,
        "auth": read_auth(args.auth),
        "i18n": I18N,  # English or Chinese, as the browser asks
        "mcp_server": args.mcp,
    }


def check_mcp_server(args: argparse.Namespace) -> None:
    """With --mcp, stop before the model loads if Gradio's MCP server can't serve here (Gradio itself would only
    print the error and serve the app without it):
    - behind a login: Gradio 6.31's MCP server has none. Its tools that use the model reach the app through a
      client without credentials and fail; the others (export, import, clear, ...) would run for anyone.
    - with mcp 2: the server is written for mcp 1 (``gradio[mcp]``, in requirements.txt); requirements-vllm.txt
      holds mcp 2, which vLLM asks for."""
    if not args.mcp:
        return
    if read_auth(args.auth):
        raise SystemExit("--mcp doesn't go with a login (--auth, $QWEN_OMNI_AUTH, $QWEN_OMNI_AUTH_FILE): Gradio's "
                         "MCP server has none (its model tools would fail, the others run for anyone)")
    try:
        from mcp.server import Server
    except ImportError:
        raise SystemExit("--mcp needs the mcp package: pip install -r requirements.txt (gradio[mcp])") from None
    if not hasattr(Server, "call_tool"):
        from importlib.metadata import version

        raise SystemExit(f"--mcp needs mcp<2 (Gradio's MCP server uses mcp 1's API); this environment has mcp "
                         f"{version('mcp')}. pip install 'mcp>=1.21,<2' (vLLM uses mcp only for its own MCP tool "
                         "server), or serve MCP from an install of requirements.txt")


def study_creators(args: argparse.Namespace):
    """Who may create and export team studies (whoever runs the app, issue 34): the --admin logins; with none named,
    anyone while the app listens on this machine only, and no one once others can reach it (0.0.0.0, a Space or a
    studio, --share), where any visitor could otherwise queue a study's thousands of engine answers."""
    from ui.evaluate.team import Creators

    if args.admin:
        return Creators(logins=tuple(args.admin))
    return Creators(anyone=args.server_name in THIS_MACHINE_ONLY and not args.share)


def read_auth(pairs: list[str] | None) -> list[tuple[str, str]] | None:
    """``user:password`` pairs from --auth, or from $QWEN_OMNI_AUTH (comma-separated) / a file named by
    $QWEN_OMNI_AUTH_FILE (one pair per line), so passwords need not appear in the process list."""
    entries = list(pairs or [])
    if os.environ.get("QWEN_OMNI_AUTH"):
        entries += os.environ["QWEN_OMNI_AUTH"].split(",")
    if os.environ.get("QWEN_OMNI_AUTH_FILE"):
        with open(os.environ["QWEN_OMNI_AUTH_FILE"], encoding="utf-8") as file:
            entries += [line.strip() for line in file if line.strip() and not line.startswith("#")]
    credentials = []
    for entry in entries:
        user, sep, password = entry.strip().partition(":")
        if not sep or not user or not password:
            raise SystemExit(f"--auth wants user:password, got {user or entry!r}")
        credentials.append((user, password))
    return credentials or None


def read_api_keys(keys: list[str] | None) -> tuple[str, ...]:
    """The keys the app's API takes: --serve-api-key, and $QWEN_OMNI_API_KEY (comma-separated), which keeps them out
    of the process list. (--api-key is the other way round: the key this app sends to a server.)"""
    entries = list(keys or []) + os.environ.get("QWEN_OMNI_API_KEY", "").split(",")
    return tuple(dict.fromkeys(key.strip() for key in entries if key.strip()))


def backend_from_args(args: argparse.Namespace, *, default_checkpoint: str = INSTRUCT, tiny: str = TINY):
    """Start the backend the command line asks for (a server needs no local checkpoint)."""
    from backends import build_backend
    from backends.checkpoints import resolve_checkpoint

    if args.backend == "openai":
        return build_backend("openai", None, **backend_options(args, random_weights=False))
    checkpoint = resolve_checkpoint(args.checkpoint, default=default_checkpoint, tiny_default=tiny)
    return build_backend(args.backend, checkpoint, **backend_options(args, checkpoint.random_weights))


def compare_backend_from_args(args: argparse.Namespace):
    """The server --compare-api-base names, as a backend (its first model; speech if it offers it), or None."""
    from backends import build_backend

    if not args.compare_api_base:
        return None
    return build_backend("openai", None, api_base=args.compare_api_base, api_key=args.api_key,
                         speech="off" if args.no_audio else "auto", video_audio=args.video_audio)


def exit_cleanly_on_sigterm() -> None:
    """`docker stop`, systemd and platform restarts send SIGTERM: leave as Ctrl+C does, so the engine
    closes and session files are removed (Python's default SIGTERM ends the process on the spot)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


def main(argv: list[str] | None = None) -> None:
    import api
    from ui import build_demo, queue_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    exit_cleanly_on_sigterm()
    args = parse_args(argv)
    check_mcp_server(args)
    if args.admin and not read_auth(args.auth):
        raise SystemExit("--admin names logins that may create team studies: add --auth (no one could log in as one)")
    compare_or_none = compare_backend_from_args(args) or contextlib.nullcontext()
    with backend_from_args(args) as backend, compare_or_none as compare_with:
        demo = build_demo(backend, args.feedback_file, compare_with, data_dir=args.data_dir,
                          creators=study_creators(args))
        # The page is up while the engine compiles; the header says so, and turns wait for it.
        threading.Thread(target=backend.warm_up, daemon=True, name="warm-up").start()
        settings = launch_settings(args)
        # The OpenAI API (/v1/realtime, /v1/chat/completions, /v1/models) on the same server and port (api/): it
        # takes the page's login and the API keys; with neither it is open, like the page.
        routes = api.app_kwargs(backend, login_required=settings["auth"] is not None,
                                api_keys=read_api_keys(args.serve_api_key))
        try:
            demo.queue(**queue_settings(backend.info)).launch(**settings, app_kwargs=routes)
        finally:
            # SIGTERM leaves launch with the server still running: stop it, and with its event loop the team studies'
            # answer under way, before the engines close under it (Ctrl+C has stopped it already).
            demo.close()


if __name__ == "__main__":
    main()
