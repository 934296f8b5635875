"""The UI in English and Chinese: the browser's language picks (Gradio's Settings panel switches it).

Keys are the English texts, so the code reads as it shows; ``t("Stop")`` marks a text for translation.
Texts made while the app runs (chat notes, errors, the status line) are translated on the server
instead: ``ui.messages``.
"""

from __future__ import annotations

import gradio as gr

ZH = {
    "Chat": "对话",
    "Live": "实时",
    "Caption": "字幕",
    "Conversation": "对话记录",
    "Message": "消息",
    "Type a message, attach images / audio / video, or record with the microphone…": "输入消息，附加图片 / 音频 / 视频，或用麦克风录音…",
    "⏹ Stop": "⏹ 停止",
    "🔄 Retry": "🔄 重新生成",
    "🗑 Clear": "🗑 清空",
    "Spoken reply (plays while it is generated)": "语音回复（边生成边播放）",
    "Status": "状态",
    "Ready.": "就绪。",
    "Text only: this backend and checkpoint don't speak.": "仅文字：此后端和模型不能发声。",
    "ℹ️ This backend answers in text only: replies appear in the transcript, unspoken.":
        "ℹ️ 此后端只回答文字：回复显示在对话文字中，不会朗读。",
    "Examples (click one, then press Enter)": "示例（点击后按回车发送）",
    "Settings": "设置",
    "Speaker": "音色",
    "Speak the reply": "语音回复",
    "Listen to the sound of videos": "听取视频中的声音",
    "Fixed once the conversation has started.": "对话开始后不可更改。",
    "System prompt": "系统提示词",
    "(none)": "（无）",
    "Use the voice-assistant prompt": "使用语音助手提示词",
    "Temperature (0 = greedy)": "温度（0 = 贪心）",
    "Top-p": "Top-p",
    "Top-k": "Top-k",
    "Max new tokens": "最大生成长度",
    "Seed (-1 = random)": "随机种子（-1 = 随机）",
    "Comment (sent with 👍/👎 on a reply, or alone on the last one)": "评论（随 👍/👎 一起提交，或单独评论最后一条回复）",
    "Send comment": "提交评论",
    "⬇ Export": "⬇ 导出",
    "Compare replies": "对比回复",
    "Replays your last message twice, side by side, without changing the conversation.": "用两组设置重新回答你的最后一条消息并排对比，不改变对话。",
    "Replay both": "两边重新生成",
    "⬆ Import": "⬆ 导入",
    "Conversation (zip)": "对话（zip）",
    "Pause that ends your turn (ms)": "结束发言的停顿（毫秒）",
    "Extra instruction (optional)": "附加指令（可选）",
    "e.g. Focus on the background sounds. / Answer in Chinese.": "例如：着重描述背景声音。/ 用英语回答。",
    "One file": "单个文件",
    "Batch": "批量",
    "Audio or video file": "音频或视频文件",
    "…or record": "…或录音",
    "Caption all": "全部生成字幕",
    "Examples": "示例",
    "Audio / video files, or a .zip of them": "音频 / 视频文件，或其 .zip 压缩包",
    "Progress": "进度",
    "Results": "结果",
    "Download (CSV, JSONL)": "下载（CSV、JSONL）",
}


def random_weights_warning(real_checkpoint: str) -> str:
    return ("> ⚠️ **Tiny random-weight model.** No real weights are loaded on this machine, so every answer and "
            "every spoken reply is random noise. The app itself works end to end; run it on a GPU with "
            f"`-c {real_checkpoint}` (or a local folder) for real answers.")


# A Markdown value holds one translatable text, so these whole lines are keys.
for _checkpoint in ("Qwen/Qwen3-Omni-30B-A3B-Instruct", "Qwen/Qwen3-Omni-30B-A3B-Captioner"):
    ZH[random_weights_warning(_checkpoint)] = (
        "> ⚠️ **微型随机权重模型。** 本机没有加载真实权重，所以每个回答、每段语音回复都是随机噪声。应用本身完整可用；"
        f"要得到真实的回答，请在 GPU 上用 `-c {_checkpoint}`（或本地目录）运行。")

# The Live tab's tips (one translatable Markdown).
ZH.update({
    "Try: *“What do you see?”* with the camera on · *“Tell me a short joke.”* · ask in Chinese: "
    "*“今天天气怎么样？”* · talk over the answer to interrupt it.":
        "试试：打开摄像头问 *“你看到了什么？”* · *“讲个简短的笑话。”* · 用英语问 *“What is the weather like today?”* · "
        "在回答时开口说话即可打断它。",
})

LIVE_PAGE_TEXTS = {
    # The Live page's own texts, shown by its script (ui/live/view.js) in the page's language: key → (en, zh).
    # {name} is filled in by the script.
    "start": ("▶ Start talking", "▶ 开始对话"),
    "stop": ("⏹ Stop", "⏹ 停止"),
    "new": ("🗑 New conversation", "🗑 新对话"),
    "camera": ("Camera on", "打开摄像头"),
    "idle": ("⏸ Press ▶ Start talking, then speak and pause.", "⏸ 点击 ▶ 开始对话，说完后停顿一下。"),
    "connecting": ("⏳ Connecting…", "⏳ 正在连接…"),
    "listening": ("🎙 Listening… talk, then pause.", "🎙 正在听…说完后停顿一下。"),
    "hearing": ("🗣 Hearing you…", "🗣 正在听你说…"),
    "thinking": ("💭 Thinking…", "💭 思考中…"),
    "answering": ("✍ Answering…", "✍ 正在回答…"),
    "speaking": ("🔊 Speaking… (talk to interrupt)", "🔊 正在回答…（开口说话即可打断）"),
    "spoken": ("🎤 (spoken)", "🎤（语音）"),
    "interrupted": ("✋ Interrupted.", "✋ 已打断。"),
    "reply_failed": ("⚠ The reply failed.", "⚠ 回复失败。"),
    "insecure": ("The microphone and camera need a secure page: open the app over https, or on localhost.",
                 "麦克风和摄像头需要安全连接：请通过 https 或在 localhost 上打开本应用。"),
    "mic_refused": ("The browser refused the microphone. Allow it for this site (the icon in the address bar), "
                    "then press ▶ Start talking again.",
                    "浏览器拒绝了麦克风。请在地址栏的图标中允许本网站使用麦克风，然后再点击 ▶ 开始对话。"),
    "mic_missing": ("No microphone was found. Connect one, then press ▶ Start talking again.",
                    "没有找到麦克风。请连接麦克风后再点击 ▶ 开始对话。"),
    "mic_busy": ("The microphone is in use by another program, or failed to start.",
                 "麦克风正被其他程序占用，或无法启动。"),
    "mic_failed": ("The microphone could not be opened: {message}", "无法打开麦克风：{message}"),
    "camera_refused": ("The browser refused the camera. Allow it for this site, then tick Camera on again.",
                       "浏览器拒绝了摄像头。请允许本网站使用摄像头，然后再勾选 打开摄像头。"),
    "camera_missing": ("No camera was found.", "没有找到摄像头。"),
    "camera_busy": ("The camera is in use by another program, or failed to start.", "摄像头正被其他程序占用，或无法启动。"),
    "camera_failed": ("The camera could not be opened: {message}", "无法打开摄像头：{message}"),
    "socket_failed": ("Can't connect to the app's realtime socket ({url}). The Live tab talks to it; it is served "
                      "by app.py beside this page. Reload the page or try again later.",
                      "无法连接到本应用的实时接口（{url}）。实时标签页通过它对话，它由 app.py 与本页面一同提供。"
                      "请刷新页面或稍后再试。"),
    "socket_closed": ("The connection to the app closed ({reason}). Press ▶ Start talking to talk again.",
                      "与应用的连接已关闭（{reason}）。点击 ▶ 开始对话即可继续。"),
    "server_error": ("The server said: {message}", "服务器提示：{message}"),
    "audio_paused": ("🔇 The browser paused the sound (another app took it, or the page was in the background). "
                     "Tap or click anywhere on the page to go on.",
                     "🔇 浏览器暂停了声音（其他应用占用了它，或页面曾在后台）。点按或点击页面任意位置即可继续。"),
    "failed": ("Something went wrong: {message}", "出错了：{message}"),
}

# The header's labels, and the notes engines add to their speech (backends/openai/backend.py).
ZH.update({
    "**Model**": "**模型**",
    "**Backend**": "**后端**",
    "**Device**": "**设备**",
    "**Speech** speaks": "**语音** 可发声",
    "**Speech** text only": "**语音** 仅文字",
    "**Users at once**": "**同时服务用户数**",
    # The Caption tab's introduction (ui/caption.py; 30 s is its segment length).
    "Detailed captions of speech, sounds and music. A video's sound track is captioned; audio longer than 30 s is "
    "captioned in 30 s segments.": "为语音、声音和音乐生成详细描述。视频取其音轨；超过 30 秒的音频按 30 秒分段描述。",
    "Made by the **Captioner** checkpoint: the audio alone is its prompt.": "由 **Captioner** 模型生成：音频本身就是提示。",
    "This model is not the Captioner, so it is asked:": "此模型不是 Captioner，因此向它提问：",
    **{f"{word} {side}": f"{zh} {side}" for side in "AB"
       for word, zh in (("Engine", "引擎"), ("Speaker", "音色"), ("Seed", "随机种子"), ("Reply", "回复"))},
    "if the server speaks (vLLM-Omni, SGLang-Omni; `vllm serve` answers in text)":
        "（取决于服务器：vLLM-Omni、SGLang-Omni 可发声；`vllm serve` 只回答文字）",
})

# The Evaluate tab (ui/evaluate/tab.py).
ZH.update({
    "Evaluate": "评测",
    "Run a prompt set through the model and judge the answers: a **.csv** or **.jsonl** sheet (columns `id`, "
    "`prompt`, `media`, and optionally `system_prompt`, `reference`) with its media files or a .zip of them. "
    "Answers fill the table as they finish; pick a row to listen and rate it.":
        "用一组提示评测模型并评判回答：一个 **.csv** 或 **.jsonl** 表格（列 `id`、`prompt`、`media`，可选 "
        "`system_prompt`、`reference`），以及它用到的媒体文件或其 .zip。回答完成后逐行填入表格；选中一行即可收听并评分。",
    "▶ Run after ⏹ Stop or an import answers only the rows left, with the run's own set-ups, and finds a row's "
    "missing files among those added since; a different sheet starts a new run.":
        "在 ⏹ 停止 或导入之后，▶ 运行 只回答剩余的行，沿用本次评测自己的配置，并在新添加的文件中查找某行缺少的文件；"
        "换一个表格则开始新的评测。",
    "Prompt sheet and its media (files or a .zip)": "提示表格及其媒体（文件或 .zip）",
    "Load the example set": "载入示例集",
    "⬆ Import results": "⬆ 导入结果",
    "**Set-up A**": "**配置 A**",
    "Set-up B (compare two set-ups)": "配置 B（对比两种配置）",
    "-1 = random": "-1 = 随机",
    "▶ Run": "▶ 运行",
    "🗑 New run": "🗑 新的评测",
    "Row": "行",
    "Media": "媒体",
    "Speech A": "语音 A",
    "Speech B": "语音 B",
    "Rating": "评分",
    "A better": "A 更好",
    "B better": "B 更好",
    "tie": "持平",
    "both wrong": "都不对",
    "good": "好",
    "wrong": "不对",
    "answer A": "回答 A",
    "answer B": "回答 B",
    "timings A": "用时 A",
    "timings B": "用时 B",
    "rating": "评分",
    "status": "状态",
    "Comment": "评论",
    "Results (CSV, JSONL, zip with the speech)": "结果（CSV、JSONL、含语音的 zip）",
})

# The Team study tab (ui/evaluate/team_tab.py).
ZH.update({
    "Team study": "团队研究",
    "Judge answers blind, with your team: pick a study, type your name (your login, if the app has one) and "
    "press **Start rating**. Each pair is one prompt answered by two set-ups whose names are hidden until you "
    "vote; the leaderboard pools everyone's votes. Your progress is kept under your name, in any browser.":
        "和团队一起盲评回答：选择一个研究，输入你的名字（如果应用需要登录，则为你的登录名），然后点击 **开始评分**。"
        "每组对比是同一个提示的两种配置的回答，配置名称在你投票后才显示；排行榜汇总所有人的投票。"
        "你的进度保存在你的名字下，换浏览器也能继续。",
    "A study answers a prompt sheet (the Evaluate tab's format) once with every set-up, in the background between "
    "chat turns; raters can start as soon as a prompt has all its answers. One row per set-up; a seed of -1 is "
    "random.":
        "研究会用每种配置把提示表格（评测标签页的格式）回答一次，在后台穿插于对话之间进行；某个提示的所有回答生成后，"
        "评分人即可开始。每种配置一行；随机种子为 -1 表示随机。",
    "Team studies (blind votes from many raters, pooled into a leaderboard) are kept on disk: start the app with "
    "`--data-dir DIR` to offer them.":
        "团队研究（多位评分人的盲评投票，汇总成排行榜）保存在磁盘上：用 `--data-dir DIR` 启动应用即可使用。",
    "Creating and exporting studies is off: others can reach this app and it names no admin. Start it with "
    "`--auth USER:PASSWORD --admin USER` to let that login create and export studies (raters need no admin).":
        "创建和导出研究已关闭：其他人可以访问本应用，而应用没有指定管理员。请用 `--auth USER:PASSWORD --admin USER` "
        "启动，让该登录名可以创建和导出研究（评分人不需要是管理员）。",
    "Study": "研究",
    "Your name": "你的名字",
    "Start rating": "开始评分",
    "Rate": "评分",
    "Comment (optional)": "评论（可选）",
    "A is better": "A 更好",
    "B is better": "B 更好",
    "Tie": "持平",
    "Both are bad": "都不好",
    "Next pair →": "下一组 →",
    "Leaderboard": "排行榜",
    "Standings (Bradley–Terry, Elo scale)": "排名（Bradley–Terry，Elo 分）",
    "Win rate": "胜率",
    "Score as the votes came in": "随投票变化的分数",
    "How often the row's set-up beat the column's": "行配置胜过列配置的比例",
    "New study": "新建研究",
    "Study name": "研究名称",
    "Set-ups": "配置",
    "Create the study": "创建研究",
    "Studies": "研究列表",
    "Votes and leaderboard (CSV, JSONL), the whole study, a Parquet dataset (zip)":
        "投票与排行榜（CSV、JSONL），整个研究，Parquet 数据集（zip）",
    "rank": "名次",
    "set-up": "配置",
    "score": "分数",
    "95% interval": "95% 区间",
    "votes": "票数",
    "wins": "胜",
    "losses": "负",
    "ties": "平",
    "both bad": "都不好",
    "win rate": "胜率",
    "study": "研究",
    "name": "名称",
    "set-ups": "配置",
    "prompts": "提示",
    "answers": "回答",
    "raters": "评分人",
    "waiting": "等待",
    # The Manage sub-tab (ui/evaluate/team_manage.py).
    "Manage": "管理",
    "For the study picked above: each rater's votes, the pairs left for them and their last vote (UTC). **Close** it "
    "and raters get no more pairs (a vote on a pair already shown is refused), no more answers are made, and its "
    "leaderboard and exports stay; **Reopen** undoes that. **Delete** removes it with its answers, votes and files "
    "for good: export it first to keep them.":
        "针对上方选中的研究：每位评分人的票数、剩余的对比数和最后一次投票时间（UTC）。**关闭**后评分人不会再收到对比"
        "（对已显示对比的投票会被拒绝），也不再生成回答，排行榜和导出保持不变；**重新开放**可撤销关闭。**删除**会永久移除"
        "研究及其回答、投票和文件：如需保留，请先导出。",
    "Raters": "评分人",
    "↻ Refresh": "↻ 刷新",
    "Close the study": "关闭研究",
    "Reopen the study": "重新开放研究",
    "To delete the study, type its name": "要删除研究，请输入它的名称",
    "Delete the study": "删除研究",
    "rater": "评分人",
    "pairs left": "剩余对比",
    "last vote": "最后投票",
    "state": "状态",
    "open": "开放中",
    "closed": "已关闭",
})

I18N = gr.I18n(en={key: key for key in ZH}, zh=ZH)


def t(text: str):
    """``text`` in the browser's language (English when no translation exists)."""
    return I18N(text) if text in ZH else text


def fixed_text(text: str, language: str) -> str:
    """One of these fixed labels in ``language``, for a component a handler rebuilds (its choices, headers)."""
    return ZH.get(text, text) if language == "zh" else text
