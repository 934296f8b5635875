"""A Chat conversation: the per-session state, and how a message becomes turns, chat messages and a request.

No Gradio components here: the handlers (``ui.chat.handlers``) and Compare (``ui.chat.compare``) share these.
"""

from __future__ import annotations

from messages import Message

import shutil
from dataclasses import dataclass, field

from backends.request import ChatRequest, MediaPart, Sampling, TextPart, Turn
from media import MediaError, kind_of
from ui.messages import Say
from ui.reply import ReplyState
from ui.scratch import session_folder
from ui.streaming import save_reply_audio

SESSION_TTL_S = 6 * 3600
"""A conversation untouched this long is dropped with its files (a closed tab's too)."""


@dataclass
class ChatSession:
    """One browser session's conversation (deep-copyable: Gradio copies the initial value)."""

    turns: list[Turn] = field(default_factory=list)
    messages: list[dict] = field(default_factory=list)
    """What the Chatbot shows: the turns plus notes (errors, stops), in Gradio's messages format."""
    use_audio_in_video: bool | None = None
    """Fixed by the first turn: changing it mid-conversation corrupts the model's positions."""
    folder: str | None = None
    """This session's reply audio files; removed when the session ends, expires or is cleared."""
    requests: dict[int, ChatRequest] = field(default_factory=dict)
    """Chat message index → the request that produced that reply. Its settings (``reply_settings``, for
    feedback and export) are worked out only when asked for: they hash the conversation's files."""
    replying: bool = False
    """A reply is being generated for this conversation (not just waiting in the queue)."""
    closed: bool = False
    """Cleared or expired: a reply still finishing must not record itself (or make a new folder)."""

    def replies_folder(self) -> str:
        if self.folder is None:
            self.folder = session_folder("omni-replies-")
        return self.folder

    def close(self) -> None:
        self.closed = True
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


def make_request(chat: ChatSession, can_speak: bool, system_prompt, speaker, speak, temperature, top_p, top_k,
                 max_tokens, seed) -> ChatRequest:
    """The request for the conversation so far, with the Settings' values as Gradio passes them."""
    return ChatRequest(
        turns=tuple(chat.turns),
        system_prompt=system_prompt or "",
        speaker=speaker or None,
        sampling=Sampling(float(temperature), float(top_p), int(top_k), int(max_tokens),
                          None if seed is None or int(seed) < 0 else int(seed)),
        return_audio=bool(speak) and can_speak,
        use_audio_in_video=bool(chat.use_audio_in_video),
    )


def normalize_message(message) -> dict:
    if message is None:
        return {"text": "", "files": []}
    if isinstance(message, str):
        return {"text": message, "files": []}
    files = [f if isinstance(f, str) else (f.get("path") or "") for f in message.get("files") or []]
    return {"text": message.get("text") or "", "files": files}


def user_parts(message: dict) -> tuple:
    if not message["text"].strip() and not message["files"]:
        raise MediaError("message", Message("chat.nothing_to_send"))
    # Media first, then the question: the order the Qwen3-Omni cookbooks use.
    media = tuple(MediaPart(kind_of(path), path) for path in message["files"])
    text = (TextPart(message["text"]),) if message["text"].strip() else ()
    return media + text


def add_user_turn(chat: ChatSession, message: dict, use_audio_in_video) -> None:
    """The message (``normalize_message``'s form) as the conversation's next user turn; raises ``MediaError`` for
    an empty message or a file of a type the model doesn't take. The first turn fixes ``use_audio_in_video``."""
    parts = user_parts(message)
    if chat.use_audio_in_video is None:
        chat.use_audio_in_video = bool(use_audio_in_video)
    chat.turns.append(Turn("user", parts))
    chat.messages.extend(user_messages(parts))


def rewind_last_reply(chat: ChatSession) -> bool:
    """Take the last reply back (turn and chat messages) so that it can be generated again; False if nothing
    was said yet."""
    if not chat.turns:
        return False
    if chat.turns[-1].role == "assistant":
        chat.turns.pop()
    last_user = max(i for i, m in enumerate(chat.messages) if m["role"] == "user")
    del chat.messages[last_user + 1 :]
    return True


def user_messages(parts: tuple) -> list[dict]:
    return [
        {"role": "user", "content": {"path": p.path}} if isinstance(p, MediaPart) else {"role": "user", "content": p.text}
        for p in parts
    ]


def turn_messages(turns: list[Turn]) -> list[dict]:
    """What the Chatbot shows for turns read back from an export: each part, and each reply's audio."""
    messages = []
    for turn in turns:
        if turn.role == "user":
            messages.extend(user_messages(turn.parts))
        else:
            messages.append({"role": "assistant", "content": turn.text})
            messages.extend({"role": "assistant", "content": {"path": p.path, "mime_type": "audio/wav"}}
                            for p in turn.media)
    return messages


def message_text(message) -> str:
    content = message.get("content") if isinstance(message, dict) else message
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""


def finish_turn(chat: ChatSession, reply: ReplyState, shown: int, message: dict | None, say: Say) -> None:
    """Record the reply (even a stopped or partial one) so the next turn sees it."""
    if chat.closed:
        return  # Clear (or expiry) ended this conversation while the reply ran: nothing to keep
    if reply.finish_reason is None:  # closed without Done: the user pressed Stop
        reply.finish_reason = "cancelled"
    if reply.failed_without_reply and message is not None:
        failed = chat.turns.pop()  # the turn produced nothing; its message goes back to the textbox
        del chat.messages[shown - len(failed.parts) :]  # one chat message per part
        chat.messages.extend(reply.messages(say=say))
        if not chat.turns:
            chat.use_audio_in_video = None  # nothing was said yet: the choice is open again
        return
    audio_path = save_reply_audio(reply, chat.replies_folder())
    extra = (MediaPart("audio", audio_path),) if audio_path else ()
    chat.turns.append(Turn.assistant(reply.text, *extra))
    chat.messages[shown:] = reply.messages(audio_path, say)
