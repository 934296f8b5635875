// The Live page's two AudioWorklet processors, loaded into its audio contexts from a Blob URL (ui/live/audio.js).
// They run on the browser's audio thread: the microphone is framed and resampled there, and the reply is played
// from a buffer there, so neither waits on the page's main thread (Gradio's rendering, the socket).

// The microphone, resampled to the server's input rate and cut into PCM16 frames of `frameSamples`.
// Down-sampling averages the input samples that fall into each output sample (a box filter: cheap, and it keeps
// most aliasing out of speech, which the model and silero-vad hear); up-sampling interpolates linearly.
class LiveMicProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const { targetRate, frameSamples } = options.processorOptions;
    this.step = sampleRate / targetRate; // input samples per output sample
    this.frameSamples = frameSamples;
    this.frame = new Int16Array(frameSamples);
    this.filled = 0;
    this.inputIndex = 0; // input samples seen so far
    this.nextEdge = this.step; // the input position where the current output sample ends
    this.sum = 0;
    this.count = 0;
    this.previous = 0;
  }

  emit(value) {
    this.frame[this.filled++] = Math.max(-32768, Math.min(32767, Math.round(value * 32767)));
    if (this.filled === this.frameSamples) {
      this.port.postMessage(this.frame.buffer, [this.frame.buffer]); // transferred: this.frame is empty now
      this.frame = new Int16Array(this.frameSamples);
      this.filled = 0;
    }
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true; // no microphone yet (or it ended): keep the node alive
    for (let i = 0; i < channel.length; i++) {
      const x = channel[i];
      if (this.step >= 1) {
        this.sum += x;
        this.count++;
        this.inputIndex++;
        if (this.inputIndex >= this.nextEdge) {
          this.emit(this.sum / this.count);
          this.sum = 0;
          this.count = 0;
          this.nextEdge += this.step;
        }
      } else {
        // Up-sampling (a microphone slower than the server's rate): output positions between two inputs.
        while (this.nextEdge - this.step <= this.inputIndex + 1) {
          const t = this.nextEdge - this.step - this.inputIndex; // 0..1 between previous and x
          this.emit(this.previous + (x - this.previous) * t);
          this.nextEdge += this.step;
        }
        this.previous = x;
        this.inputIndex++;
      }
    }
    return true;
  }
}

// The reply's speech: PCM pushed by the page as it arrives, played as soon as it is there. A ring buffer that
// grows when a reply arrives faster than it plays (a GPU talker is many times real time). Each push names the
// response item it belongs to, so the page can ask how much of an item was really played (for truncate) and is
// told when an item starts sounding and when it has played out.
class LivePlayerProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.ring = new Float32Array(sampleRate * 8);
    this.read = 0;
    this.size = 0;
    this.segments = []; // [{id, left}] in ring order: which item the buffered samples belong to
    this.items = new Map(); // id -> {received, played, ended, started, underruns, starving}
    this.port.onmessage = (event) => this.command(event.data);
  }

  item(id) {
    if (!this.items.has(id)) {
      this.items.set(id, { received: 0, played: 0, ended: false, started: false, underruns: 0, starving: false });
    }
    return this.items.get(id);
  }

  report(type, id) {
    const it = this.item(id);
    this.port.postMessage({ type, id, received: it.received, played: it.played, underruns: it.underruns });
    if (type === "drained" || type === "flushed") this.items.delete(id); // its story is told
  }

  command(message) {
    if (message.type === "push") {
      this.push(message.id, message.samples);
    } else if (message.type === "end") {
      // The item will get no more audio: once what is buffered has played, it is done.
      const it = this.item(message.id);
      it.ended = true;
      if (!this.segments.some((s) => s.id === message.id)) this.report("drained", message.id);
    } else if (message.type === "flush") {
      // Barge-in: silence now. What was played of each buffered item is what the user heard.
      const cut = new Set(this.segments.map((s) => s.id));
      for (const [id, it] of this.items) if (it.started && !it.ended) cut.add(id); // played out, still coming
      this.read = 0;
      this.size = 0;
      this.segments = [];
      for (const id of cut) this.report("flushed", id);
    }
  }

  push(id, samples) {
    if (this.size + samples.length > this.ring.length) this.grow(this.size + samples.length);
    let write = (this.read + this.size) % this.ring.length;
    const first = Math.min(samples.length, this.ring.length - write);
    this.ring.set(samples.subarray(0, first), write);
    this.ring.set(samples.subarray(first), 0);
    this.size += samples.length;
    const last = this.segments[this.segments.length - 1];
    if (last && last.id === id) last.left += samples.length;
    else this.segments.push({ id, left: samples.length });
    const it = this.item(id);
    it.received += samples.length;
    it.starving = false;
  }

  grow(needed) {
    let length = this.ring.length;
    while (length < needed) length *= 2;
    const ring = new Float32Array(length);
    for (let i = 0; i < this.size; i++) ring[i] = this.ring[(this.read + i) % this.ring.length];
    this.ring = ring;
    this.read = 0;
  }

  process(_inputs, outputs) {
    const out = outputs[0][0];
    let written = 0;
    while (written < out.length && this.size > 0) {
      const segment = this.segments[0];
      const it = this.item(segment.id);
      const n = Math.min(out.length - written, segment.left, this.ring.length - this.read);
      out.set(this.ring.subarray(this.read, this.read + n), written);
      if (!it.started) {
        it.started = true;
        this.report("started", segment.id);
      }
      written += n;
      this.read = (this.read + n) % this.ring.length;
      this.size -= n;
      segment.left -= n;
      it.played += n;
      if (segment.left === 0) {
        this.segments.shift();
        if (it.ended && !this.segments.some((s) => s.id === segment.id)) this.report("drained", segment.id);
      }
    }
    if (written < out.length) {
      out.fill(0, written);
      // Ran dry in the middle of an item that is still coming: a gap the listener hears.
      for (const [id, it] of this.items) {
        if (it.started && !it.ended && !it.starving && it.played === it.received) {
          it.starving = true;
          it.underruns++;
          this.report("underrun", id);
        }
      }
    }
    return true;
  }
}

registerProcessor("live-mic", LiveMicProcessor);
registerProcessor("live-player", LivePlayerProcessor);
