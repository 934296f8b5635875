// The Live tab's page talks to the app's own /v1/realtime WebSocket (the OpenAI Realtime protocol, api/realtime),
// one socket per conversation: microphone frames go up as input_audio_buffer.append (tab.py MIC_FRAME_MS), the
// server's VAD ends the turn and answers at once, and the reply's PCM plays from a worklet as it arrives. The page
// only knows the protocol (ui/ never imports api/). Loaded by ui/live/tab.py after audio.js and view.js, as a
// gr.HTML's js_on_load.

function liveRealtimeUrl(root, page) {
  // The socket beside the page: Gradio's root URL (it carries a reverse proxy's root path), else the page's folder.
  const base = new URL(root || page.href, page.href);
  const folder = root ? base.pathname : base.pathname.replace(/[^/]*$/, "");
  base.protocol = base.protocol === "https:" || page.protocol === "https:" ? "wss:" : "ws:";
  base.pathname = folder.replace(/\/+$/, "") + "/v1/realtime";
  base.search = "";
  base.hash = "";
  return base.href;
}

const LIVE_TRUNCATE_PREFIX = "event_live_truncate_";

class LiveClient {
  constructor(element, props) {
    this.view = new LiveView(element, props.texts);
    this.settings = { ...props.settings };
    this.inputRate = props.input_rate;
    this.outputRate = props.output_rate;
    this.frameMs = props.frame_ms;
    this.worklets = liveWorkletUrl(props.worklets);
    this.running = this.connecting = this.userSpeaking = this.awaiting = false;
    this.ws = this.mic = this.player = this.camera = this.pendingImage = null;
    this.responses = new Map(); // by response id; byItem: by its output item (what the player and truncate name)
    this.byItem = new Map();
    this.words = new Map(); // a spoken turn's transcript so far, by its item id
    // What tests and benchmarks/live_latency.py read (window.qwenLive.stats); the page itself doesn't need it.
    this.stats = { session: null, responses: [], turns: [], truncates: [], errors: [], framesSent: 0, images: 0 };
    this.audio = new LiveAudioKeeper(() => this.view.showError(new LiveError("audio_paused")), () => {
      if (this.view.error && this.view.error.key === "audio_paused") this.view.clearError();
    });
    this.view.start.addEventListener("click", () => (this.running ? this.stop() : this.start()));
    this.view.fresh.addEventListener("click", () => this.newConversation());
    this.view.camera.addEventListener("change", () => this.toggleCamera(this.view.camera.checked));
    this.render();
  }

  phase() {
    if (!this.running) return "idle";
    if (this.connecting) return "connecting";
    if (this.userSpeaking) return "hearing";
    if ([...this.responses.values()].some((r) => r.sounding)) return "speaking";
    const answering = [...this.responses.values()].some((r) => !r.done && !r.interrupted);
    if (answering && !this.settings.speaks) return "answering";
    return answering || this.awaiting ? "thinking" : "listening";
  }

  render() {
    this.view.show({ running: this.running, phase: this.phase() });
  }

  // -- starting and stopping --------------------------------------------------------------------------------------

  async start() {
    if (this.running) return;
    this.running = this.connecting = true;
    this.view.clearError();
    this.render();
    const mic = (this.mic = new LiveMic(this.worklets, this.inputRate, this.frameMs, (f) => this.sendAudio(f)));
    const player = (this.player = this.settings.speaks ?
      new LivePlayer(this.worklets, this.outputRate, (m) => this.heard(m)) : null);
    // Both audio contexts are made now, inside the click, before the first await: browsers let audio start only
    // from a user's gesture, and Safari's gesture ends at the first await (audio.js liveAudioContext).
    mic.open();
    if (player) player.open();
    const results = await Promise.allSettled([player && player.start(), mic.start(), this.connect()]);
    if (this.mic !== mic) { // Stop was pressed meanwhile: what started since goes too
      mic.stop();
      if (player) player.stop();
      return;
    }
    const failed = results.find((result) => result.status === "rejected");
    if (failed) {
      this.stop();
      this.view.showError(failed.reason);
      return;
    }
    this.stats.micStartedAt = this.mic.startedAt;
    this.stats.outputRate = this.player ? this.player.context.sampleRate : null;
    this.audio.keep([mic.context, player && player.context]);
    this.connecting = false;
    if (this.view.camera.checked && !this.camera) this.toggleCamera(true);
    this.render();
  }

  stop() {
    this.running = this.connecting = this.userSpeaking = this.awaiting = false;
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close(); // the server cancels a reply in progress, and the engine's work with it
    this.audio.stop();
    for (const device of [this.mic, this.player]) if (device) device.stop();
    this.mic = this.player = null;
    for (const r of this.responses.values()) r.sounding = false;
    this.toggleCamera(false);
    this.render();
  }

  dispose() {
    // This client's page is replaced (qwenLive): it lets go of its devices, socket and listeners on the document.
    clearTimeout(this.configTimer);
    this.stop();
    this.view.dispose();
  }

  async newConversation() {
    // A new session is a new conversation: the server forgets the old one with its socket.
    if (this.connecting) return;
    this.responses.clear();
    this.byItem.clear();
    this.words.clear();
    this.view.clearTranscript();
    this.pendingImage = null;
    this.userSpeaking = this.awaiting = false;
    if (!this.ws) return this.render();
    if (this.player) this.player.flush();
    const old = this.ws;
    this.ws = null;
    old.close();
    this.connecting = true;
    this.render();
    try {
      await this.connect();
      this.connecting = false;
    } catch (err) {
      if (!this.running) return; // Stop was pressed while the new socket opened: its closing is no error
      this.stop();
      this.view.showError(err);
    }
    this.render();
  }

  async toggleCamera(on) {
    this.view.camera.checked = on;
    if (!on) {
      if (this.camera) this.camera.stop();
      this.camera = null;
      return;
    }
    if (this.camera) return;
    this.camera = new LiveCamera(this.view.video);
    try {
      await this.camera.start();
    } catch (err) {
      this.camera = null;
      this.view.camera.checked = false;
      this.view.showError(err);
    }
  }

  // -- the socket ---------------------------------------------------------------------------------------------------

  connect() {
    // Resolves once the server has taken the session (session.created): until then the page says "connecting".
    const url = liveRealtimeUrl((window.gradio_config || {}).root, window.location);
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      let opened = false;
      let ready = false;
      this.ws = ws;
      ws.onopen = () => {
        opened = true;
        this.sendSession(); // before any audio: the server reads it first, so every frame is heard at our rate
      };
      ws.onmessage = (message) => {
        if (this.ws !== ws) return; // a socket we have left (New conversation)
        let event;
        try {
          event = JSON.parse(message.data);
        } catch (err) {
          return;
        }
        if (!ready && event.type === "session.created") {
          ready = true;
          resolve();
        }
        this.handle(event);
        this.render();
      };
      ws.onclose = (close) => {
        const reason = close.reason || close.code;
        if (!ready) reject(new LiveError(opened ? "socket_closed" : "socket_failed", { url, reason }));
        else if (this.ws === ws && this.running) {
          this.stop();
          this.view.showError(new LiveError("socket_closed", { reason }));
        }
      };
    });
  }

  send(event) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(event));
  }

  sendAudio(frame) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    this.send({ type: "input_audio_buffer.append", audio: livePcm16ToBase64(frame) });
    this.stats.framesSent++;
  }

  configure(changes) {
    // The tab's Settings (their change events call this): sent as one session.update once typing pauses.
    Object.assign(this.settings, changes);
    clearTimeout(this.configTimer);
    this.configTimer = setTimeout(() => this.sendSession(), 300);
  }

  sendSession() {
    const s = this.settings;
    const session = {
      type: "realtime", instructions: s.instructions || "", output_modalities: [s.speaks ? "audio" : "text"],
      audio: { input: { format: { type: "audio/pcm", rate: this.inputRate }, turn_detection: {
        type: "server_vad", silence_duration_ms: Math.round(s.silence_ms), create_response: true,
        interrupt_response: true },
        // The user's words for their bubble: the same model transcribes each turn once its reply has begun.
        transcription: { model: "qwen3-omni" } } },
    };
    if (s.speaks && s.voice) session.audio.output = { voice: s.voice };
    this.send({ type: "session.update", session });
  }

  // -- what the server says -----------------------------------------------------------------------------------------

  handle(event) {
    const now = Date.now() / 1000;
    const responseId = event.response_id || (event.response && event.response.id);
    const r = this.responses.get(responseId) || this.byItem.get(event.item_id);
    switch (event.type) {
      case "session.created":
      case "session.updated":
        this.stats.session = event.session;
        break;
      case "input_audio_buffer.speech_started":
        this.userSpeaking = true;
        this.stats.turns.push({ startedAt: now, item_id: event.item_id });
        if (this.stats.turns.length > 50) this.stats.turns.shift();
        this.interrupt();
        this.sendPicture();
        break;
      case "input_audio_buffer.speech_stopped":
        this.userSpeaking = false;
        this.awaiting = true;
        Object.assign(this.turn(), { stoppedAt: now, audio_end_ms: event.audio_end_ms });
        break;
      case "input_audio_buffer.committed":
        this.turn().committedAt = now;
        this.view.say(event.item_id, "user", null, "spoken");
        if (this.pendingImage) this.view.picture(event.item_id, this.pendingImage.url);
        this.pendingImage = null;
        break;
      case "conversation.item.input_audio_transcription.delta":
        this.heardWords(event.item_id, (this.words.get(event.item_id) || "") + (event.delta || ""));
        break;
      case "conversation.item.input_audio_transcription.completed":
        this.heardWords(event.item_id, event.transcript || "", "completed");
        break;
      case "conversation.item.input_audio_transcription.failed":
        this.heardWords(event.item_id, "", "failed");
        break;
      case "response.created":
        this.awaiting = false;
        this.track({ id: event.response.id, createdAt: now, status: "in_progress", received: 0, played: 0,
          workletReceived: 0, underruns: 0, deltas: 0 });
        break;
      case "response.output_item.added":
        if (r) {
          r.itemId = event.item.id;
          this.byItem.set(r.itemId, r);
        }
        break;
      case "response.output_audio_transcript.delta":
      case "response.output_text.delta":
        if (r && !r.interrupted) {
          r.text = (r.text || "") + event.delta;
          this.view.say(r.itemId, "assistant", r.text);
        }
        break;
      case "response.output_audio.delta":
        if (r && !r.interrupted && this.player) {
          const samples = liveBase64ToFloat(event.delta);
          r.firstAudioAt = r.firstAudioAt || now;
          r.received += samples.length;
          r.deltas++;
          this.player.push(r.itemId, samples);
        }
        break;
      case "response.output_audio.done":
        if (r && !r.interrupted && this.player) this.player.end(r.itemId);
        break;
      case "response.done":
        if (r) this.finished(r, event.response);
        break;
      case "conversation.item.truncated":
        if (r) r.truncatedAt = event.audio_end_ms;
        break;
      case "error":
        this.refused(event.error || {});
        break;
    }
  }

  turn() {
    return this.stats.turns[this.stats.turns.length - 1] || {};
  }

  heardWords(itemId, text, ended = null) {
    // A spoken turn's transcript so far, in its bubble in place of the placeholder; without words (none yet, or
    // the transcription failed) the placeholder stays, or comes back.
    if (!this.view.bubbles.has(itemId)) return; // a turn of a conversation the page has left
    if (ended) this.words.delete(itemId);
    else this.words.set(itemId, text);
    if (text.trim()) this.view.say(itemId, "user", text);
    else this.view.say(itemId, "user", null, "spoken");
    const turn = this.stats.turns.find((t) => t.item_id === itemId);
    if (turn) Object.assign(turn, { transcript: text, transcription: ended || "in_progress" });
  }

  track(r) {
    this.responses.set(r.id, r);
    this.stats.responses.push(r);
    // Bounded: a long talk keeps the last replies' records only.
    while (this.stats.responses.length > 50) this.stats.responses.shift();
    for (const [id, old] of this.responses) {
      if (this.stats.responses.includes(old)) continue;
      this.responses.delete(id);
      this.byItem.delete(old.itemId);
    }
  }

  finished(r, response) {
    r.done = true;
    r.doneAt = Date.now() / 1000;
    r.status = response.status;
    r.reason = response.status_details && response.status_details.reason;
    if (r.status === "cancelled" && r.itemId) this.view.note(r.itemId, "interrupted");
    if (r.status === "failed") {
      const error = (response.status_details && response.status_details.error) || {};
      this.view.note(r.itemId || r.id, "reply_failed");
      this.view.showError(new LiveError("server_error", { message: error.message || "" }), 8);
    }
    if (!r.received && this.player) r.drained = true; // nothing to play: done as soon as it is done
  }

  refused(error) {
    this.stats.errors.push(error);
    // A truncate the server can't take changes nothing the user sees: the reply has stopped already.
    if ((error.event_id || "").startsWith(LIVE_TRUNCATE_PREFIX)) return;
    this.view.showError(new LiveError("server_error", { message: error.message || error.code || "" }), 8);
  }

  // -- barge-in and pictures ----------------------------------------------------------------------------------------

  interrupt() {
    // The user talks: whatever reply is sounding or coming stops at once. The server cancels one in progress; the
    // page silences what it still has buffered, and tells the server how much was heard (truncate).
    let sounding = false;
    for (const r of this.responses.values()) {
      if (r.interrupted || (r.done && !r.sounding && (r.drained || !r.received))) continue;
      r.interrupted = true;
      r.interruptedAt = Date.now() / 1000;
      if (r.itemId) this.view.note(r.itemId, "interrupted");
      sounding = sounding || r.received > 0;
    }
    if (sounding && this.player) this.player.flush(); // the worklet answers "flushed" with what was played
  }

  heard(message) {
    // The player worklet's news about one reply item.
    const r = this.byItem.get(message.id);
    if (!r) return;
    r.workletReceived = message.received;
    r.played = message.played;
    r.underruns = message.underruns;
    if (message.type === "started") {
      r.startedAt = Date.now() / 1000;
      r.sounding = true;
    } else if (message.type === "drained") {
      r.sounding = false;
      r.drained = true;
    } else if (message.type === "flushed") {
      r.sounding = false;
      r.flushedAt = Date.now() / 1000;
      const audioEndMs = Math.floor((message.played * 1000) / this.outputRate);
      this.stats.truncates.push({ item_id: r.itemId, audio_end_ms: audioEndMs, played: message.played });
      this.send({ type: "conversation.item.truncate", event_id: LIVE_TRUNCATE_PREFIX + r.itemId, item_id: r.itemId,
        content_index: 0, audio_end_ms: audioEndMs });
    }
    this.render();
  }

  sendPicture() {
    // With the camera on, the latest picture goes in as its own user item as the user starts talking: with server
    // VAD the turn is committed and answered by the server in one step, so the picture must be there before.
    if (!this.camera || !this.camera.latest) return;
    if (this.pendingImage) this.send({ type: "conversation.item.delete", item_id: this.pendingImage.id });
    const id = "item_live_" + Math.random().toString(16).slice(2, 14);
    this.pendingImage = { id, url: this.camera.latest };
    this.send({ type: "conversation.item.create", item: { id, type: "message", role: "user",
      content: [{ type: "input_image", image_url: this.pendingImage.url }] } });
    this.stats.images++;
  }
}

function qwenLive(element, props) {
  // One client per page: a re-mounted tab replaces the old one (its devices, socket and observer are let go).
  if (window.qwenLive) window.qwenLive.dispose();
  window.qwenLive = new LiveClient(element, props);
}
