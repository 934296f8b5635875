"""``/v1/realtime``: the OpenAI Realtime protocol (GA event names, the ``openai`` SDK's types) on the app's port.

Talk to the model live from any Realtime client, e.g. the ``openai`` SDK::

    client = openai.AsyncOpenAI(base_url="http://127.0.0.1:7860/v1", api_key="unused")
    async with client.realtime.connect(model="qwen3-omni") as connection:
        await connection.session.update(session={"type": "realtime", "output_modalities": ["audio"]})
        await connection.input_audio_buffer.append(audio=base64_pcm16_24khz)   # server VAD ends the turn
        async for event in connection: ...   # response.output_audio.delta: base64 PCM16 at 24 kHz

Each connection is a session (``session.py``) over the app's one backend, answered like the tabs' turns (the
engine batches them). Event flow:

- ``session.created`` on connect; ``session.update`` → ``session.updated`` (instructions, voice = the checkpoint's
  speakers, ``server_vad`` or ``null`` turn detection, input audio PCM16 at 24 or 16 kHz, output modalities).
- ``input_audio_buffer.append`` → with server VAD (``listening.py``, silero): ``speech_started`` (barge-in: a
  response in progress is cancelled), ``speech_stopped``, ``committed``, ``conversation.item.added``/``done``,
  then a response. Without VAD the client ``commit``s and asks ``response.create``.
- ``conversation.item.create`` (input_text, input_audio, input_image parts), ``conversation.item.delete``,
  ``conversation.item.truncate`` (a spoken reply keeps the text of the part the client played),
  ``conversation.item.retrieve`` (the item with its audio and images; ``items.py``).
- ``response.create`` → ``response.created`` … deltas … ``response.done`` (``response.py``); ``response.cancel``.
- With ``audio.input.transcription`` set, each user audio part is transcribed by the same engine once its reply has
  begun: ``conversation.item.input_audio_transcription.delta`` … ``.completed`` or ``.failed``
  (``transcription.py``).
- Anything refused → an ``error`` event with a code (``protocol.Refusal``), and the session goes on.

Not served yet: ``output_audio_buffer.clear``, ``semantic_vad``,
out-of-band responses, tools. Who may connect: ``api.access`` (a key or the page's login).
"""

from api.realtime.server import PATH, realtime_route
from api.realtime.session import RealtimeLimits, RealtimeSession

__all__ = ["PATH", "RealtimeLimits", "RealtimeSession", "realtime_route"]
