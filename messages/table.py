"""Every run-time message of the engines, media checks, file imports and the UI: code → (English, Chinese).

A placeholder holds either text that stays as it is (a file name, a number, an engine's own
words) or another message of this table, rendered in the same language. Both templates of a
code have the same placeholders (tests/test_messages.py checks it). Texts fixed when the page
is built are not here: the browser translates those (``ui.i18n``).
"""

from __future__ import annotations

TABLE: dict[str, tuple[str, str]] = {
    "verbatim": ("{text}", "{text}"),
    "joined": ("{first}; {rest}", "{first}; {rest}"),
    # A file that can't be used (media/, backends/conversation.py, ui/chat/archive.py, ui/caption.py)
    "media.file_problem": ("{file}: {problem}", "{file}：{problem}"),
    "media.unsupported_type": ("unsupported file type '{suffix}'", "不支持的文件类型“{suffix}”"),
    "media.not_found": ("file not found", "找不到文件"),
    "media.empty": ("the file is empty", "文件是空的"),
    "media.too_big": ("file is {size} MB, the limit is {limit} MB", "文件大小为 {size} MB，上限是 {limit} MB"),
    "media.unreadable_image": ("not a readable image ({reason})", "无法读取的图片（{reason}）"),
    "media.unreadable_audio": ("not a readable audio file", "无法读取的音频文件"),
    "media.pictures_no_sound": ("not a readable audio file (it holds pictures, no sound)",
                                "无法读取的音频文件（其中只有画面，没有声音）"),
    "media.no_sound_track": ("the video has no sound track", "视频没有音轨"),
    "media.no_samples": ("the audio has no samples", "音频中没有采样"),
    "media.audio_too_short": ("the audio is only {length} ms long; it takes at least {minimum} ms",
                              "音频只有 {length} 毫秒；至少需要 {minimum} 毫秒"),
    "media.audio_too_long": ("audio is {length} s long, the limit is {limit} s", "音频长 {length} 秒，上限是 {limit} 秒"),
    "media.audio_over_limit": ("audio is longer than the {limit} s limit", "音频超过了 {limit} 秒的上限"),
    "media.sample_rate": ("the audio's sample rate is {rate} Hz; it takes {minimum} to {maximum} Hz",
                          "音频的采样率是 {rate} Hz；只能接受 {minimum} 到 {maximum} Hz"),
    "media.invalid_samples": ("the audio holds invalid samples (NaN or infinity)", "音频中含有无效的采样值（NaN 或无穷大）"),
    "media.video_too_long": ("video is {length} s long, the limit is {limit} s", "视频长 {length} 秒，上限是 {limit} 秒"),
    "media.no_video_stream": ("the file has no video stream", "文件中没有视频流"),
    "media.unreadable_video": ("not a readable video ({reason})", "无法读取的视频（{reason}）"),
    "media.no_frames": ("the video has no frames", "视频中没有画面"),
    "media.video_frame_too_big": ("video frames are {width}×{height}; the limit is {limit} megapixels a frame",
                                  "视频画面为 {width}×{height}；每帧上限是 {limit} 百万像素"),
    "media.sound_breaks": ("the sound can't be decoded past {at} s ({reason})", "声音在 {at} 秒之后无法解码（{reason}）"),
    "media.kind.image": ("image", "图片"),
    "media.kind.audio": ("audio", "音频"),
    "media.kind.video": ("video", "视频"),
    # Fitting a conversation to the model (backends/conversation.py)
    "prompt.too_many_files": ("one message takes at most {limit} files; this one has {count}",
                              "一条消息最多附加 {limit} 个文件；这条有 {count} 个"),
    "prompt.over_engine_limit": (
        "the engine takes at most {limit} {kind} file(s) per conversation (--limit-mm-per-prompt), and this message "
        "alone has more",
        "引擎每段对话最多接受 {limit} 个{kind}文件（--limit-mm-per-prompt），而这一条消息就超过了"),
    "prompt.too_long": (
        "this message needs {length} tokens with its files, and the model takes {budget} ({context} minus {reply} kept "
        "for the reply): use shorter audio or video, or fewer files",
        "这条消息连同文件需要 {length} 个词元，而模型只能接受 {budget} 个（{context} 减去为回复保留的 {reply} 个）："
        "请使用更短的音频或视频，或减少文件数量"),
    "prompt.silent_video": ("{file} has no sound track; the model heard silence for it.",
                            "{file} 没有音轨；模型听到的是静音。"),
    "prompt.left_out_files": ("The conversation holds more files than the model takes at once, so {what} were left out.",
                              "对话中的文件超过了模型一次能接受的数量，因此省略了{what}。"),
    "prompt.left_out_context": (
        "The conversation outgrew the model's context ({context} tokens with {reply} kept for the reply), so {what} "
        "were left out.",
        "对话超出了模型的上下文（{context} 个词元，其中 {reply} 个留给回复），因此省略了{what}。"),
    "prompt.first_messages": ("the first {count} messages", "前 {count} 条消息"),
    "prompt.first_messages_and_file": ("the first {count} messages and their {files} file", "前 {count} 条消息及其 {files} 个文件"),
    "prompt.first_messages_and_files": ("the first {count} messages and their {files} files",
                                        "前 {count} 条消息及其 {files} 个文件"),
    # Warming up (the transformers and hybrid engines): said to a turn that waits, and in the header (ui/__init__.py)
    "engine.warming_up": ("The model is warming up ({what}); this turn starts right after.",
                          "模型正在预热（{what}）；完成后立即开始本轮。"),
    "warm_up.header": ("⏳ **Warming up:** {what}. Turns sent now start when it is done.",
                       "⏳ **预热中：**{what}。现在发送的消息会在预热完成后开始处理。"),
    "warm_up.loading_weights": ("loading the model's weights", "正在加载模型权重"),
    "warm_up.loading_weights_percent": ("loading the model's weights… {percent} %", "正在加载模型权重… {percent} %"),
    "warm_up.waiting_to_compile": ("waiting to compile the model", "等待编译模型"),
    "warm_up.compiling_talker": ("compiling the talker and its code predictor (first start: about 2 minutes)",
                                 "正在编译 Talker 及其码本预测器（首次启动约 2 分钟）"),
    "warm_up.compiling_thinker": ("compiling the thinker with one short reply (first start: about 2 minutes)",
                                  "正在用一条简短回复编译 Thinker（首次启动约 2 分钟）"),
    # Engines' errors: the cause inside stays as the engine said it.
    "engine.generation_failed": ("Generation failed: {cause}", "生成失败：{cause}"),
    "engine.refused": ("The engine refused this request: {cause}", "引擎拒绝了这个请求：{cause}"),
    "vllm.media_limit": ("{cause} The whole conversation counts: press Clear, or start the app with a higher "
                         "--limit-mm-per-prompt.", "{cause} 整段对话都计算在内：请按“清空”，或用更高的 --limit-mm-per-prompt 启动应用。"),
    "engine.load_failed": ("The model could not be loaded: {cause}", "模型无法加载：{cause}"),
    "speech.failed_reply_kept": ("Speech generation failed ({cause}); the text reply is kept.",
                                 "语音生成失败（{cause}）；文字回复已保留。"),
    "speech.failed_text_kept": ("Speech generation failed ({cause}); the text is kept.", "语音生成失败（{cause}）；文字已保留。"),
    "speech.unavailable": ("No speech: {cause}", "没有语音：{cause}"),
    "speech.no_token_ids": (
        "The text server sent no token ids, so there is nothing to speak: the hybrid backend needs a vLLM server (it "
        "asks for return_token_ids).",
        "文字服务器没有发送词元 id，因此没有可朗读的内容：混合后端需要 vLLM 服务器（它会请求 return_token_ids）。"),
    # The engine thread's health (backends/transformers/engine_thread.py)
    "engine.thread_stopped": ("The model's engine thread stopped ({cause}). Restart the app to go on.",
                              "模型的引擎线程已停止（{cause}）。请重启应用以继续。"),
    "engine.thread_exited": ("it exited", "线程已退出"),
    "engine.stuck": ("The model has made no progress for over {seconds} s: its engine seems stuck. Restart the app to "
                     "go on.", "模型已超过 {seconds} 秒没有任何进展：引擎似乎卡住了。请重启应用以继续。"),
    "engine.no_reply": ("The engine failed on this turn without a reply (the server log says why). Try again.",
                        "引擎在这一轮失败了，没有回复（原因见服务器日志）。请再试一次。"),
    # A model server (backends/openai/backend.py)
    "reply.text_kept": ("The text so far is kept.", "已生成的文字会保留。"),
    "reply.nothing": ("Nothing was generated.", "没有生成任何内容。"),
    "server.ended_early": ("The model server ended the reply early. {kept}", "模型服务器提前结束了回复。{kept}"),
    "server.timed_out": ("The model server sent nothing for {seconds} s; gave up. {kept}",
                         "模型服务器 {seconds} 秒内没有发送任何内容，已放弃。{kept}"),
    "server.unreachable": ("Can't reach the model server at {url} ({cause}). Is it running?",
                           "无法连接 {url} 的模型服务器（{cause}）。它在运行吗？"),
    "server.broke": ("The connection to the model server broke mid-reply ({cause}). {kept}",
                     "回复途中与模型服务器的连接中断（{cause}）。{kept}"),
    "server.refused": ("The model server refused the request (HTTP {status}): {cause}",
                       "模型服务器拒绝了请求（HTTP {status}）：{cause}"),
    "server.failed": ("The model server failed (HTTP {status}): {cause}", "模型服务器出错（HTTP {status}）：{cause}"),
    "server.error_mid_reply": ("The model server reported an error mid-reply: {cause}. {kept}",
                               "模型服务器在回复途中报告了错误：{cause}。{kept}"),
    "server.text_only": (
        "This server answered in text only: plain `vllm serve` runs the Thinker alone. For speech, start vLLM-Omni "
        "(`vllm serve <checkpoint> --omni`) or SGLang-Omni; replies stay text until then.",
        "此服务器只回答文字：普通的 `vllm serve` 只运行 Thinker。要语音回复，请启动 vLLM-Omni"
        "（`vllm serve <checkpoint> --omni`）或 SGLang-Omni；在此之前回复只有文字。"),
    "server.left_out": ("The conversation outgrew the model server's context, so the first {count} messages were left "
                        "out.", "对话超出了模型服务器的上下文，因此省略了前 {count} 条消息。"),
    "server.unreachable_at_start": (
        "Can't reach the model server at {url} ({cause}). Start it first, or pass --model to start the app anyway.",
        "无法连接 {url} 的模型服务器（{cause}）。请先启动它，或传入 --model 以照常启动应用。"),
    "server.models_refused": ("The model server at {url} answered HTTP {status} to GET /models: {cause}",
                              "{url} 的模型服务器对 GET /models 返回了 HTTP {status}：{cause}"),
    "server.no_model": ("The model server at {url} serves no model.", "{url} 的模型服务器没有提供任何模型。"),
    # Importing a conversation (ui/chat/archive.py) and unpacking zips (media/archives.py, for every import)
    "archive.not_exported": ("not a conversation exported by this app", "不是本应用导出的对话"),
    "archive.too_big": ("unpacks to more than {size} GB", "解压后超过 {size} GB"),
    "archive.not_a_zip": ("not a readable zip archive ({reason})", "无法读取的 zip 压缩包（{reason}）"),
    "archive.too_many_members": ("holds {count} files; the limit is {limit}", "包含 {count} 个文件；上限是 {limit} 个"),
    "archive.bomb": ("{file} unpacks to {ratio} times its packed size (at most {limit} times is taken): a zip bomb?",
                     "{file} 解压后是压缩大小的 {ratio} 倍（最多接受 {limit} 倍）：可能是压缩炸弹"),
    "archive.bad_member": ("{file} can't be unpacked ({reason})", "{file} 无法解压（{reason}）"),
    "archive.member_too_big": ("{file} unpacks to {size}; the limit for it is {limit}",
                               "{file} 解压后为 {size}；它的上限是 {limit}"),
    "archive.unreadable": ("not a readable conversation archive ({reason})", "无法读取的对话压缩包（{reason}）"),
    "archive.bad_role": ("message {number} has the role {role}; a message's role is {roles} or {last}",
                         "第 {number} 条消息的角色是 {role}；消息的角色只能是 {roles} 或 {last}"),
    "archive.bad_part": ("message {number} has a part of type {type}; a part is {types} or {last}",
                         "第 {number} 条消息有一个类型为 {type} 的部分；部分的类型只能是 {types} 或 {last}"),
    "archive.text_not_text": ("message {number} has a text part that is not text", "第 {number} 条消息的文字部分不是文字"),
    "archive.path_leaves": ("message {number} names the file {file}, a path that leads out of the folder it would be "
                            "unpacked into", "第 {number} 条消息指向文件 {file}，这个路径会离开解压的目标文件夹"),
    "archive.missing_member": ("message {number} names the file {file}, which the archive does not hold",
                               "第 {number} 条消息指向文件 {file}，但压缩包中没有这个文件"),
    "caption.cant_open_archive": ("Can't open the archive: {problem}", "无法打开压缩包：{problem}"),
    "chat.nothing_to_send": ("type something or attach a file first", "请先输入文字或附加文件"),
    # Prompt sheets (ui/evaluate/sheet.py)
    "sheet.one_sheet": ("Add exactly one prompt sheet (.csv or .jsonl).", "请只添加一个提示表格（.csv 或 .jsonl）。"),
    "sheet.one_sheet_got": ("Add exactly one prompt sheet (.csv or .jsonl); got {count}.",
                            "请只添加一个提示表格（.csv 或 .jsonl）；收到了 {count} 个。"),
    "sheet.not_text": ("{file}: not a readable UTF-8 text file ({cause})", "{file}：无法读取的 UTF-8 文本文件（{cause}）"),
    "sheet.no_columns": ("{file}: the first line must name the columns, with a 'prompt' column (and optionally id, "
                         "media, system_prompt, reference).",
                         "{file}：第一行必须是列名，其中要有 'prompt' 列（可选 id、media、system_prompt、reference）。"),
    "sheet.too_many_rows": ("{file}: more than {limit} rows; at most {limit} per run.",
                            "{file}：超过 {limit} 行；每次最多 {limit} 行。"),
    "sheet.too_big": ("{file}: more than {limit} MB; a sheet holds at most {limit} MB.",
                      "{file}：超过 {limit} MB；表格最大 {limit} MB。"),
    "sheet.no_prompts": ("{file}: no prompts in it.", "{file}：其中没有提示。"),
    "sheet.not_json_object": ("not a JSON object", "不是 JSON 对象"),
    "sheet.bad_json": ("not a JSON object ({reason})", "不是 JSON 对象（{reason}）"),
    "sheet.missing_files": ("missing file: {files}", "缺少文件：{files}"),
    "sheet.empty_row": ("no prompt and no media", "没有提示也没有媒体"),
    "sheet.too_deep": ("not a JSON object (nested too deeply)", "不是 JSON 对象（嵌套层数过多）"),
    "sheet.not_utf8": ("not UTF-8 text", "不是 UTF-8 文本"),
    "sheet.row_too_long": ("the row is longer than {limit} MB", "该行超过 {limit} MB"),
    "sheet.bad_csv": ("not a readable CSV row ({reason})", "无法读取的 CSV 行（{reason}）"),
    "sheet.csv_field_too_long": ("a value is longer than {limit} characters", "有一个值超过 {limit} 个字符"),
    "sheet.field_too_long": ("'{field}' is longer than {limit} characters", "“{field}”超过 {limit} 个字符"),
    "sheet.wrong_type": ("'{field}' must be {expected}", "“{field}”必须是{expected}"),
    "sheet.type.text": ("text or a number", "文本或数字"),
    "sheet.type.files": ("a list of file names", "文件名列表"),
    # Set-ups checked against the Evaluate tab's bounds, and imported results (ui/evaluate/setup.py, importing.py)
    "setup.wrong_type": ("{field} is {value}, not {expected}", "{field} 是 {value}，不是{expected}"),
    "setup.type.object": ("a JSON object", "JSON 对象"),
    "setup.type.bool": ("true or false", "true 或 false"),
    "setup.type.text": ("text", "文本"),
    "setup.type.number": ("a number", "数字"),
    "setup.type.whole": ("a whole number", "整数"),
    "setup.out_of_range": ("{field} is {value}; the Evaluate tab takes {low} to {high}",
                           "{field} 是 {value}；评测页只接受 {low} 到 {high}"),
    "setup.not_a_choice": ("{field} is {value}; it takes one of: {choices}", "{field} 是 {value}；只能是以下之一：{choices}"),
    "setup.too_long": ("{field} is longer than {limit} characters", "{field} 超过 {limit} 个字符"),
    "setup.no_engine": ("Set-up {side} answers with the engine '{engine}', which this server doesn't run.",
                        "配置 {side} 使用引擎“{engine}”，但此服务器没有运行它。"),
    "setup.no_speaker": ("Set-up {side} speaks as '{speaker}', a voice this server doesn't have (it has {speakers}).",
                         "配置 {side} 使用音色“{speaker}”，此服务器没有这个音色（可用：{speakers}）。"),
    "import.not_export": ("{file}: not an Evaluate export ({reason})", "{file}：不是评测导出的文件（{reason}）"),
    "import.no_jsonl": ("no results.jsonl inside", "其中没有 results.jsonl"),
    "import.not_a_row": ("row {row} is not a JSON object with id and setup_a", "第 {row} 行不是含 id 和 setup_a 的 JSON 对象"),
    "import.no_rows": ("no rows", "没有任何行"),
    "import.too_big": ("{file}: more than {limit} MB of results; an export holds at most {limit} MB",
                        "{file}：结果超过 {limit} MB；导出文件最多 {limit} MB"),
    "import.too_many_rows": ("{file}: more than {limit} rows; a run holds at most {limit}",
                              "{file}：超过 {limit} 行；一次评测最多 {limit} 行"),
    "import.bad_value": ("{file}, row {row}: {problem}", "{file}，第 {row} 行：{problem}"),
    "import.bad_audio": ("{field} is {value}, not a .wav in the export's audio/ folder",
                          "{field} 是 {value}，不是导出文件 audio/ 文件夹中的 .wav"),
    "import.shared_speech": ("Speech left out: {files} belong to more than one answer.",
                              "未导入的语音：{files} 属于不止一个回答。"),
    "import.bad_speech": ("Speech left out: {files} are not readable WAV files.", "未导入的语音：{files} 不是可读取的 WAV 文件。"),
    # The UI's own texts made while the app runs (ui/): the status line, chat notes, errors and progress.
    # The status line and a reply's notes (ui/reply.py, ui/chat/handlers.py, ui/evaluate/tab.py)
    "ui.ready": ("Ready.", "就绪。"),
    "ui.stopped": ("Stopped.", "已停止。"),
    "ui.thinking": ("Thinking…", "思考中…"),
    "ui.generating": ("Generating…", "生成中…"),
    "ui.finished": ("Finished ({reason}).", "已结束（{reason}）。"),
    "reply.thinking_title": ("Thinking", "思考过程"),
    "reply.empty": ("(empty reply)", "（空回复）"),
    "reply.stopped": ("⏹ Stopped.", "⏹ 已停止。"),
    "reply.max_tokens": ("✂️ Reached the max-tokens limit.", "✂️ 已达到最大生成长度。"),
    # The pieces of the status line's timings, joined by " · " (ui/reply.py)
    "metrics.first_token": ("first token {seconds} s", "首个词元 {seconds} 秒"),
    "metrics.tokens_per_s": ("{speed} tok/s", "{speed} 词元/秒"),
    "metrics.tokens": ("{prompt} prompt + {reply} reply tokens", "提示 {prompt} + 回复 {reply} 个词元"),
    "metrics.speech": ("speech {seconds} s", "语音 {seconds} 秒"),
    "metrics.first_audio": ("first audio {seconds} s", "首段语音 {seconds} 秒"),
    "metrics.talker_speed": ("talker {speed} frames/s", "Talker {speed} 帧/秒"),
    "metrics.real_time_factor": ("RTF {value}", "实时率 {value}"),
    "metrics.total": ("total {seconds} s", "总计 {seconds} 秒"),
    # The Chat tab (ui/chat/)
    "chat.imported": ("Imported {count} messages.", "已导入 {count} 条消息。"),
    "chat.nothing_to_retry": ("Nothing to retry yet.", "还没有可以重新生成的回复。"),
    "chat.nothing_to_export": ("Nothing to export yet.", "还没有可以导出的对话。"),
    "chat.comment_needs_reply": ("Write a comment after a reply first.", "请先在有回复之后填写评论。"),
    "chat.compare_needs_message": ("Send a message first.", "请先发送一条消息。"),
    # The Chat tab's example labels (ui/examples.py): the page's load shows them in the user's language
    "example.speech_recognition": ("Speech recognition", "语音识别"),
    "example.translation": ("Translation", "翻译"),
    "example.music": ("Music", "音乐"),
    "example.image_question": ("Image question", "看图问答"),
    "example.video_description": ("Video description", "视频描述"),
    "example.audio_visual_question": ("Audio-visual question", "音视频问答"),
    # The Caption tab (ui/caption.py)
    "caption.no_file": ("Upload or record an audio file first.", "请先上传或录制一个音频文件。"),
    "caption.no_files": ("Add some audio or video files (or a .zip of them) first.",
                         "请先添加音频或视频文件（或它们的 .zip 压缩包）。"),
    "caption.captioning": ("Captioning {file}", "正在描述 {file}"),
    "caption.files_done": ("{done} of {total} files done.", "已完成 {done} / {total} 个文件。"),
    "caption.stopped": ("Stopped: the rows above are kept.", "已停止：上面的结果会保留。"),
    # The Evaluate tab (ui/evaluate/tab.py)
    "evaluate.running": ("Running…", "运行中…"),
    "evaluate.answering": ("Answering {row}…", "正在回答 {row}…"),
    "evaluate.row_done": ("{row} done.", "{row} 已完成。"),
    "evaluate.resuming": ("Resuming: {count} rows left, with the run's own set-ups.",
                          "继续运行：剩余 {count} 行，沿用本次评测的配置。"),
    "evaluate.all_done": ("Every row is done: pick a row to listen and rate it, then export.",
                          "全部完成：选中一行收听并评分，然后导出。"),
    "evaluate.stopped": ("Stopped: the rows done are kept; ▶ Run answers the {count} left.",
                         "已停止：已完成的行会保留；▶ 运行 会回答剩余的 {count} 行。"),
    "evaluate.nothing_to_export": ("Nothing to export yet: run a prompt set first.",
                                   "还没有可导出的内容：请先运行一组提示。"),
    "evaluate.cant_import": ("Can't import it: {cause}", "无法导入：{cause}"),
    "evaluate.imported": ("Imported {count} rows: rate on, or ▶ Run the {left} not answered.",
                          "已导入 {count} 行：继续评分，或 ▶ 运行 未回答的 {left} 行。"),
    "evaluate.reference": ("Reference:", "参考答案："),
    "evaluate.not_answered": ("(not answered yet)", "（尚未回答）"),
    "evaluate.row_problem": ("row {row}: {problem}", "第 {row} 行：{problem}"),
    "evaluate.cut": ("{sides}: max tokens", "{sides}：达到最大生成长度"),
    "evaluate.resuming_own_setups": ("Resuming: {count} rows left, with the run's own set-ups (the ones shown now "
                                     "differ: {fields}; 🗑 New run starts anew with them).",
                                     "继续运行：剩余 {count} 行，沿用本次评测的配置（当前显示的配置不同：{fields}；"
                                     "🗑 新的评测 会用它们重新开始）。"),
    "evaluate.replaced": ("A different sheet starts a new run: the previous one's {count} rows not answered are "
                          "dropped.", "不同的表格会开始新的评测：上一次评测中未回答的 {count} 行已舍弃。"),
    "evaluate.renamed_ids": ("Rows {rows} repeat an earlier row's id, so each is named id#row.",
                             "第 {rows} 行的 id 与前面的行重复，已改名为 id#行号。"),
    "evaluate.cant_run_here": ("{reason} Rate and export it here; its rows left can't be answered on this server.",
                               "{reason} 可以在这里评分和导出；但剩余的行无法在此服务器上回答。"),
    "evaluate.cant_resume": ("{reason} 🗑 New run starts anew with the set-ups shown.",
                             "{reason} 🗑 新的评测 会用当前显示的配置重新开始。"),
    # The MCP tools (ui/tools/)
    "tools.no_conversation": ("No conversation {id}: no such id, or it ended (unused for hours, or the app "
                              "restarted). Start a new one with chat and no conversation_id.",
                              "没有对话 {id}：没有这个 id，或对话已结束（数小时未使用，或应用已重启）。请不带 conversation_id 调用 chat "
                              "开始新对话。"),
    "tools.no_run": ("No evaluation run {id}: no such id, or it ended (unused for a day, or the app restarted). "
                     "Start a new one with evaluate and no run_id.",
                     "没有评测 {id}：没有这个 id，或评测已结束（一天未使用，或应用已重启）。请不带 run_id 调用 evaluate 开始新的评测。"),
    "tools.busy": ("{id} is still answering another call; wait for that one first.",
                   "{id} 仍在处理另一个调用；请等它完成。"),
    "tools.not_a_file": ("Give a file as an http(s) URL or a data: URI.", "请以 http(s) 网址或 data: URI 的形式提供文件。"),
    "tools.no_row": ("This run has no row {row}.", "本次评测中没有 {row} 这一行。"),
    "tools.run_complete": ("Run {id} has every row answered: rate or export it, or start a new run without run_id.",
                           "评测 {id} 的每一行都已回答：可以评分或导出，或不带 run_id 开始新的评测。"),
    "tools.rating_choices": ("This run's rows are rated {ratings}.", "本次评测的行只能评为：{ratings}。"),
    # Team studies (studies/, ui/evaluate/team*.py)
    "studies.newer_schema": ("{file} was written by a newer version of the app (schema {version}; this one knows "
                             "up to {known}): update the app, or give it another --data-dir.",
                             "{file} 由更新版本的应用写入（结构版本 {version}；本应用最高支持 {known}）：请更新应用，"
                             "或换一个 --data-dir。"),
    "studies.no_study": ("No study {id}: it was deleted, or the id is wrong. Pick a study from the list.",
                         "没有研究 {id}：它已被删除，或编号有误。请从列表中选择一个研究。"),
    "studies.closed": ("Study {name} is closed: it takes no more votes (its leaderboard stays). Pick another study, or "
                       "ask its creator to reopen it.",
                       "研究 {name} 已关闭：不再接受投票（排行榜仍保留）。请选择其他研究，或请研究的创建者重新开放。"),
    "studies.closed_before_vote": ("Study {name} was closed before your vote: it was not counted. If the study is "
                                   "reopened, this pair comes back to you.",
                                   "研究 {name} 在你投票前已关闭：这一票没有计入。如果研究重新开放，这组对比会再次交给你。"),
    "studies.media_gone": ("The files {files} were removed while the study was created (a study using them was "
                           "deleted): create it again.",
                           "创建研究时文件 {files} 被移除了（使用它们的一个研究被删除）：请重新创建。"),
    "studies.no_engine": ("Set-up {setup} answers with the engine '{engine}', which this server lacks: its answers "
                          "wait (start the app with that engine, e.g. --compare-api-base).",
                          "配置 {setup} 使用引擎“{engine}”回答，而此服务器没有该引擎：其回答将等待"
                          "（请用该引擎启动应用，例如 --compare-api-base）。"),
    "studies.not_kept": ("the answer could not be kept ({cause})", "无法保存回答（{cause}）"),
    "studies.setup_failing": ("Set-up {setup} failed in the engine ({cause}): its answers are tried again in "
                              "{seconds} s.", "配置 {setup} 在引擎中失败（{cause}）：其回答将在 {seconds} 秒后重试。"),
    "studies.setup_gave_up": ("Set-up {setup} failed in the engine {attempts} times on {count} prompts (last: {cause}): "
                              "those answers wait until the app restarts.",
                              "配置 {setup} 在引擎中对 {count} 个提示各失败了 {attempts} 次（最近一次：{cause}）："
                              "这些回答将等到应用重启后再生成。"),
    "studies.no_pair": ("No pair {id} for you: ask for your next pair.", "你没有编号为 {id} 的对比：请获取下一组对比。"),
    "studies.bad_choice": ("A vote is one of {choices}, not {choice}.", "投票只能是 {choices} 之一，而不是 {choice}。"),
    "studies.comment_too_long": ("A comment takes at most {limit} characters.", "评论最多 {limit} 个字符。"),
    "studies.no_rater": ("Type your name first: your votes and progress are kept under it.",
                         "请先输入你的名字：你的投票和进度会保存在这个名字下。"),
    "studies.rater_too_long": ("A rater's name takes at most {limit} characters.", "评分人名字最多 {limit} 个字符。"),
    "team.not_admin": ("Only the app's admins create studies (--admin); you can rate the ones there are.",
                       "只有应用管理员（--admin）可以创建研究；你可以为已有的研究评分。"),
    "team.no_admin": ("No one creates or exports studies on this app: others can reach it and it names no admin. "
                      "Start it with --auth and --admin USER to let that login do so; you can rate the studies there "
                      "are.",
                      "本应用不允许任何人创建或导出研究：其他人可以访问它，而它没有指定管理员。请用 --auth 和 --admin USER "
                      "启动，让该登录名可以这样做；你可以为已有的研究评分。"),
    "team.manage_not_admin": ("Only those who may create studies close, reopen or delete them and see every rater's "
                              "progress.",
                              "只有可以创建研究的人才能关闭、重新开放或删除研究，以及查看每位评分人的进度。"),
    "team.delete_confirm": ("To delete study {name}, type its name exactly in the box first: its answers, votes and "
                            "files are removed for good.",
                            "要删除研究 {name}，请先在输入框中准确输入它的名称：它的回答、投票和文件将被永久删除。"),
    "team.closed": ("Study {name} is closed: raters get no more pairs, and its leaderboard and exports stay as they "
                    "are. Reopen it to go on.",
                    "研究 {name} 已关闭：评分人不会再收到对比，排行榜和导出保持不变。重新开放即可继续。"),
    "team.reopened": ("Study {name} is open again: raters go on where they were.",
                      "研究 {name} 已重新开放：评分人从原来的位置继续。"),
    "team.deleted": ("Study {name} ({id}) is deleted, with its answers, votes and files.",
                     "研究 {name}（{id}）已删除，包括它的回答、投票和文件。"),
    "team.study_gone": ("This study was deleted: your vote was not kept. Pick another study.",
                        "这个研究已被删除：你的投票没有保存。请选择其他研究。"),
    "team.manage_status": ("**{name}** ({id}): {state}. {votes} votes from {raters} raters; {ready} pairs ready for "
                           "each rater.", "**{name}**（{id}）：{state}。{raters} 位评分人共 {votes} 票；"
                           "每位评分人有 {ready} 组对比已就绪。"),
    "team.state.open": ("open", "开放中"),
    "team.state.closed": ("closed since {when}", "自 {when} 起已关闭"),
    "team.export_not_admin": ("Only those who may create studies export them: an export names the set-up behind "
                              "every answer, which would unblind the pairs still to rate.",
                              "只有可以创建研究的人才能导出：导出文件写明每个回答出自哪种配置，会让尚未评分的对比不再是盲评。"),
    "team.no_good_rows": ("The sheet has no row that can be answered: see the Evaluate tab's format.",
                          "表格中没有可以回答的行：请参照评测标签页的格式。"),
    "team.setup_count": ("A study compares {low} to {high} set-ups.", "一个研究对比 {low} 到 {high} 种配置。"),
    "team.setup_not_object": ("Set-up {number} is not an object of settings.", "配置 {number} 不是一个设置对象。"),
    "team.same_label": ("Two set-ups are called {label}: each needs its own name.", "有两种配置都叫 {label}：每种配置需要自己的名字。"),
    "team.pick_study": ("Pick a study first.", "请先选择一个研究。"),
    "team.created": ("Study {name} ({id}) is created: its answers are being made; rating starts with the first "
                     "prompt answered by every set-up.",
                     "研究 {name}（{id}）已创建：正在生成回答；当第一个提示的所有配置都回答后即可开始评分。"),
    "team.progress": ("You have judged {done} of the {total} pairs ready.", "已就绪的 {total} 组对比中，你已评判 {done} 组。"),
    "team.all_judged": ("You have judged every pair ready ({done} of {total}). More come as answers are made.",
                        "你已评判所有已就绪的对比（{done} / {total}）。生成更多回答后会有新的对比。"),
    "team.no_pair_shown": ("Press Start rating to get a pair first.", "请先点击 开始评分 获取一组对比。"),
    "team.revealed": ("You voted: {choice}. **A** was **{a}**, **B** was **{b}**.",
                      "你的投票：{choice}。**A** 是 **{a}**，**B** 是 **{b}**。"),
    "team.revealed_again": ("This pair had your vote already ({choice}); it counts once. **A** was **{a}**, **B** was "
                            "**{b}**.", "这组对比已有你的投票（{choice}），只计一次。**A** 是 **{a}**，**B** 是 **{b}**。"),
    "team.choice.a": ("A is better", "A 更好"),
    "team.choice.b": ("B is better", "B 更好"),
    "team.choice.tie": ("tie", "持平"),
    "team.choice.both_bad": ("both are bad", "都不好"),
    "team.board_note": ("{votes} votes from {raters} raters. Raters who judged the same pair agreed {agreement} of the "
                        "time (Krippendorff's alpha {alpha}).",
                        "{raters} 位评分人共 {votes} 票。评判同一组对比的评分人一致的比例为 {agreement}"
                        "（Krippendorff's alpha {alpha}）。"),
}
