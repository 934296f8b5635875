"""Turn-taking for live voice: who is talking in a stream of microphone samples (silero-vad).

Used by the Live tab (``ui/live``) and the realtime API (``api/realtime``), so it lives below both.
Import rules: ``turns`` imports nothing of the app's but ``media`` and ``messages``; neither ``ui`` nor ``api``
is imported here, and no engine (``backends``) imports it.
"""

from turns.detector import SAMPLE_RATE, SpeechStarted, TurnDetector, TurnEnded, TurnSettings

__all__ = ["SAMPLE_RATE", "SpeechStarted", "TurnDetector", "TurnEnded", "TurnSettings"]
