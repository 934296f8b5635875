"""From the parsed command line to what the parts take: the backend's options (``backends.build_backend``),
``Blocks.launch``'s keywords, the logins and API keys, who may create team studies; and the checks that stop a
launch that could not work before the model loads."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from backends.checkpoints import INSTRUCT, TINY
from cli.arguments import DEFAULT_API_BASE, THIS_MACHINE_ONLY, UPLOAD_LIMIT


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
        if not read_auth(args.auth):
            raise SystemExit("--admin names logins that may create team studies: add --auth (no one could log in as "
                             "one)")
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
