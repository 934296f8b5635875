"""``/v1/models`` and ``/v1/chat/completions``: OpenAI's Chat Completions API on the app's port, streamed or whole,
answered by the same engine as the tabs.

Talk to the model from any OpenAI client, e.g. the ``openai`` SDK::

    client = openai.OpenAI(base_url="http://127.0.0.1:7860/v1", api_key="unused")
    stream = client.chat.completions.create(model="qwen3-omni", stream=True, modalities=["text", "audio"],
                                            audio={"voice": "ethan", "format": "pcm16"},
                                            messages=[{"role": "user", "content": "Hello!"}])
    for chunk in stream: ...   # choices[0].delta.audio: {"transcript": ...} or {"data": base64 PCM16 at 24 kHz}

Laid out as vLLM's entrypoints: ``router.py`` (the HTTP edge) → ``serving.py`` (``OpenAIServingChat``: checks, the
engine's stream, SSE) → ``protocol.py`` (the request and its conversions), ``inputs.py`` (messages → the
conversation, media through ``media``), ``reply.py`` (events → the SDK's chunk and completion types).
"""

from api.chat.router import chat_routes
from api.chat.serving import ChatLimits, OpenAIServingChat

__all__ = ["ChatLimits", "OpenAIServingChat", "chat_routes"]
