// The Live page's media on the main thread: the microphone, the reply player and the webcam, each a small class
// around the browser's APIs. The audio work itself happens in the worklets (ui/live/worklets.js).

const LIVE_FRAME_MAX_SIDE = 448; // what the Chat tab downsizes webcam pictures to, as the model sees them
const LIVE_FRAME_EVERY_MS = 1000;

class LiveError extends Error {
  // A failure the page explains to the user: `key` names its text (ui/i18n.py LIVE_PAGE_TEXTS).
  constructor(key, detail = {}) {
    super(key);
    this.key = key;
    this.detail = detail;
  }
}

function liveWorkletUrl(source) {
  // A Blob URL for the worklets' source, which comes with the page: no file route, and it works behind any root path.
  if (!liveWorkletUrl.url) {
    liveWorkletUrl.url = URL.createObjectURL(new Blob([source], { type: "text/javascript" }));
  }
  return liveWorkletUrl.url;
}

function liveMediaError(err, device) {
  // getUserMedia's errors, as the user can act on them.
  const name = err && err.name;
  if (name === "NotAllowedError" || name === "SecurityError" || name === "PermissionDeniedError") {
    return new LiveError(`${device}_refused`);
  }
  if (name === "NotFoundError" || name === "OverconstrainedError" || name === "DevicesNotFoundError") {
    return new LiveError(`${device}_missing`);
  }
  if (name === "NotReadableError" || name === "AbortError") return new LiveError(`${device}_busy`);
  return new LiveError(`${device}_failed`, { message: String((err && err.message) || err) });
}

function liveNeedsSecurePage() {
  // Browsers give the microphone and camera only to https pages and localhost.
  return !(navigator.mediaDevices && navigator.mediaDevices.getUserMedia);
}

function liveAudioContext(options) {
  // An AudioContext made and resumed at once. Call it in the click that starts the talk, before anything is
  // awaited: Safari (iOS too) lets a context run only if it is made or resumed within a user's gesture, and the
  // first await ends the gesture (the microphone's permission prompt can take seconds).
  const context = new AudioContext(options);
  context.resume().catch(() => {}); // a refusal leaves it suspended: LiveClient.audioStateChanged says so
  return context;
}

class LiveMic {
  // The microphone with the browser's echo cancellation, noise suppression and gain control on, framed into
  // PCM16 at `rate` by the "live-mic" worklet, `frameMs` a frame; `onFrame(Int16Array)` gets each frame.
  constructor(workletUrl, rate, frameMs, onFrame) {
    this.workletUrl = workletUrl;
    this.rate = rate;
    this.frameMs = frameMs;
    this.onFrame = onFrame;
  }

  open() {
    // The audio context, made in the user's click (liveAudioContext), before the microphone is asked for. Its
    // rate is the browser's default, the device's: some browsers can't connect a microphone to a context at
    // another rate.
    this.context = this.context || liveAudioContext({ latencyHint: "interactive" });
  }

  async start() {
    if (liveNeedsSecurePage()) throw new LiveError("insecure");
    this.open();
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
      });
    } catch (err) {
      throw liveMediaError(err, "mic");
    }
    this.startedAt = Date.now() / 1000;
    await this.context.audioWorklet.addModule(this.workletUrl);
    const source = this.context.createMediaStreamSource(this.stream);
    this.node = new AudioWorkletNode(this.context, "live-mic", {
      processorOptions: { targetRate: this.rate, frameSamples: Math.round((this.rate * this.frameMs) / 1000) },
    });
    this.node.port.onmessage = (event) => this.onFrame(new Int16Array(event.data));
    source.connect(this.node);
    this.node.connect(this.context.destination); // it writes silence; connected, it is always processed
    await this.context.resume();
  }

  stop() {
    if (this.stream) this.stream.getTracks().forEach((track) => track.stop());
    if (this.context) this.context.close().catch(() => {});
    this.stream = this.context = this.node = null;
  }
}

const LIVE_GESTURES = ["pointerdown", "pointerup", "touchend", "keydown", "click"];
// The events that give a page the user's activation (HTML's activation-triggering input events, and click).
const LIVE_RESUME_WAIT_MS = 500; // a paused context that resumes by itself this soon needs no word to the user

class LiveAudioKeeper {
  // Keeps the talk's audio contexts running. A browser may suspend one: iOS when a call or another app takes the
  // audio ("interrupted"), Safari when the page was in the background, any browser when the device changes. The
  // microphone then sends nothing and replies play silently, with no error anywhere. So a paused context is
  // resumed at once; if the browser wants a user's gesture for that, `onPaused()` tells the user, and the next tap
  // or key anywhere on the page resumes it; `onRunning()` when all run again.
  constructor(onPaused, onRunning) {
    this.onPaused = onPaused;
    this.onRunning = onRunning;
    this.contexts = [];
    this.onGesture = () => this.paused().forEach((context) => context.resume().catch(() => {}));
  }

  keep(contexts) {
    this.contexts = contexts.filter(Boolean);
    for (const context of this.contexts) context.onstatechange = () => this.check();
    this.check(); // one the browser refused to start waits for a gesture too
  }

  paused() {
    return this.contexts.filter((context) => context.state === "suspended" || context.state === "interrupted");
  }

  check() {
    const paused = this.paused();
    if (!paused.length) return this.settle();
    paused.forEach((context) => context.resume().catch(() => {}));
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      if (!this.paused().length) return;
      this.onPaused();
      LIVE_GESTURES.forEach((type) => document.addEventListener(type, this.onGesture, true));
    }, LIVE_RESUME_WAIT_MS);
  }

  settle() {
    clearTimeout(this.timer);
    LIVE_GESTURES.forEach((type) => document.removeEventListener(type, this.onGesture, true));
    this.onRunning();
  }

  stop() {
    // The talk stopped (its contexts are closed): nothing to wait for.
    for (const context of this.contexts) context.onstatechange = null;
    this.contexts = [];
    this.settle();
  }
}

class LivePlayer {
  // The reply's speech through the "live-player" worklet, in a context at the server's output rate (24 kHz), so
  // the PCM plays as it comes and the browser resamples it for the device. `onReport(message)` gets the
  // worklet's news: started, underrun, drained, flushed (each with the item's received and played samples).
  constructor(workletUrl, rate, onReport) {
    this.workletUrl = workletUrl;
    this.rate = rate;
    this.onReport = onReport;
  }

  open() {
    // In the user's click, as the microphone's (LiveMic.open).
    this.context = this.context || liveAudioContext({ sampleRate: this.rate, latencyHint: "interactive" });
  }

  async start() {
    this.open();
    await this.context.audioWorklet.addModule(this.workletUrl);
    this.node = new AudioWorkletNode(this.context, "live-player", { numberOfInputs: 0, outputChannelCount: [1] });
    this.node.port.onmessage = (event) => this.onReport(event.data);
    this.node.connect(this.context.destination);
    await this.context.resume();
  }

  push(id, samples) {
    if (this.node) this.node.port.postMessage({ type: "push", id, samples }, [samples.buffer]);
  }

  end(id) {
    if (this.node) this.node.port.postMessage({ type: "end", id });
  }

  flush() {
    if (this.node) this.node.port.postMessage({ type: "flush" });
  }

  stop() {
    if (this.context) this.context.close().catch(() => {});
    this.context = this.node = null;
  }
}

class LiveCamera {
  // The webcam shown in `video`; about once a second its picture is kept, downsized, as a JPEG data: URL
  // (`latest`), what goes to the model with the user's next turn.
  constructor(video) {
    this.video = video;
    this.latest = null;
  }

  async start() {
    if (liveNeedsSecurePage()) throw new LiveError("insecure");
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 } } });
    } catch (err) {
      throw liveMediaError(err, "camera");
    }
    this.video.srcObject = this.stream;
    this.video.hidden = false;
    await this.video.play().catch(() => {});
    this.timer = setInterval(() => this.grab(), LIVE_FRAME_EVERY_MS);
  }

  grab() {
    const { videoWidth: w, videoHeight: h } = this.video;
    if (!w || !h) return;
    const scale = Math.min(1, LIVE_FRAME_MAX_SIDE / Math.max(w, h));
    const canvas = document.createElement("canvas");
    canvas.width = Math.round(w * scale);
    canvas.height = Math.round(h * scale);
    canvas.getContext("2d").drawImage(this.video, 0, 0, canvas.width, canvas.height);
    this.latest = canvas.toDataURL("image/jpeg", 0.85);
  }

  stop() {
    clearInterval(this.timer);
    if (this.stream) this.stream.getTracks().forEach((track) => track.stop());
    this.video.srcObject = null;
    this.video.hidden = true;
    this.stream = this.latest = null;
  }
}

function livePcm16ToBase64(frame) {
  const bytes = new Uint8Array(frame.buffer, frame.byteOffset, frame.byteLength);
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

function liveBase64ToFloat(data) {
  // base64 PCM16 little-endian → float32 in [-1, 1].
  const binary = atob(data);
  const view = new DataView(new ArrayBuffer(binary.length));
  for (let i = 0; i < binary.length; i++) view.setUint8(i, binary.charCodeAt(i));
  const samples = new Float32Array(binary.length >> 1);
  for (let i = 0; i < samples.length; i++) samples[i] = view.getInt16(2 * i, true) / 32768;
  return samples;
}
