"""Qwen3-Omni web app: chat with text, images, audio and video; hear the reply.

    python app.py                                   # GPU: Qwen3-Omni-30B-A3B-Instruct; no GPU: tiny random model
    python app.py -c Qwen/Qwen3-Omni-30B-A3B-Thinking
    python app.py -c /models/Qwen3-Omni-30B-A3B-Instruct --server-name 0.0.0.0

The official demo's command lines work too (`python app.py -c <ckpt> --use-transformers
--generate-audio --flash-attn2`).
"""

from __future__ import annotations

import argparse
import logging
import os

from backends.checkpoints import INSTRUCT, TINY

DEFAULT_PORT = 7860
UPLOAD_LIMIT = "200mb"
"""Gradio refuses bigger uploads before they reach the disk (the media limits say the same)."""


def parse_args(argv: list[str] | None = None, *, default_checkpoint: str = INSTRUCT, tiny: str = TINY,
               default_port: int = DEFAULT_PORT) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--checkpoint", "--checkpoint-path", dest="checkpoint", default=None,
                        help=f"hub id or local folder (default: {default_checkpoint} with a GPU, "
                        f"else '{tiny}', a tiny random-weight model built offline)")
    parser.add_argument("--backend", choices=["transformers"], default="transformers")
    parser.add_argument("--server-name", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--server-port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", default_port)))
    parser.add_argument("--flash-attn2", action="store_true", help="force flash_attention_2 (default: auto)")
    parser.add_argument("--attn-implementation", default="auto", help="auto | flash_attention_2 | sdpa | eager")
    parser.add_argument("--no-audio", action="store_true", help="never speak; drops the talker (~10 GB less)")
    parser.add_argument("--max-speech-seconds", type=float, default=None,
                        help="cap on one spoken reply (default 300 s; 4 s for the tiny model)")
    parser.add_argument("--cpu-only", action="store_true", help="run on the CPU even if a GPU is present")
    parser.add_argument("--share", action="store_true", help="public Gradio share link (off by default)")
    parser.add_argument("--inbrowser", action="store_true", help="open a browser tab on start")
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
    max_speech = args.max_speech_seconds or (4.0 if random_weights else 300.0)
    return {
        "audio_output": not args.no_audio,
        "attn_implementation": args.attn_implementation,
        "device": "cpu" if args.cpu_only else "auto",
        "max_speech_seconds": max_speech,
    }


def main(argv: list[str] | None = None) -> None:
    from backends import build_backend
    from backends.checkpoints import resolve_checkpoint
    from ui import build_demo, queue_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    checkpoint = resolve_checkpoint(args.checkpoint)
    with build_backend(args.backend, checkpoint, **backend_options(args, checkpoint.random_weights)) as backend:
        demo = build_demo(backend)
        demo.queue(**queue_settings(backend.info)).launch(
            server_name=args.server_name,
            server_port=args.server_port,
            share=args.share,
            inbrowser=args.inbrowser,
            show_error=True,
            max_file_size=UPLOAD_LIMIT,
        )


if __name__ == "__main__":
    main()
