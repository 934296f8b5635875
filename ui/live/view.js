// The Live page's display: its texts in the page's language, the Start/Stop button, the state line, the error line
// and the transcript. It knows nothing of the socket; the client (realtime.js) tells it what to show.

class LiveView {
  constructor(element, texts) {
    this.element = element;
    this.texts = texts; // {en: {key: text}, zh: {...}} (ui/i18n.py LIVE_PAGE_TEXTS)
    const find = (selector) => element.querySelector(selector);
    this.start = find(".live-start");
    this.fresh = find(".live-new");
    this.camera = find(".live-camera input");
    this.state = find(".live-state");
    this.errorLine = find(".live-error");
    this.transcript = find(".live-transcript");
    this.video = find(".live-video");
    this.bubbles = new Map();
    this.error = null;
    this.shown = { running: false, phase: "idle" };
    // Gradio's language picker sets <html lang>: follow it. The observer is the document's, so it would keep this
    // view (and its client) alive after the page is replaced: dispose() lets go of it.
    this.langObserver = new MutationObserver(() => this.show(this.shown));
    this.langObserver.observe(document.documentElement, { attributes: true, attributeFilter: ["lang"] });
  }

  dispose() {
    this.langObserver.disconnect();
    clearTimeout(this.errorTimer);
    cancelAnimationFrame(this.scrolling);
  }

  text(key, detail = {}) {
    const lang = (document.documentElement.lang || navigator.language || "en").toLowerCase();
    const text = this.texts[lang.startsWith("zh") ? "zh" : "en"][key] || this.texts.en[key] || key;
    return text.replace(/\{(\w+)\}/g, (_, name) => (name in detail ? String(detail[name]) : ""));
  }

  show(shown) {
    // Called after every server event: it touches the page only where something changed, so a reply's many
    // deltas cost no layout work while its audio starts.
    this.shown = shown;
    const lang = document.documentElement.lang;
    if (lang !== this.lang) {
      this.lang = lang;
      this.element.querySelectorAll("[data-text]").forEach((node) => (node.textContent = this.text(node.dataset.text)));
    }
    const set = (node, text) => { if (node.textContent !== text) node.textContent = text; };
    set(this.start, this.text(shown.running ? "stop" : "start"));
    this.start.classList.toggle("live-running", shown.running);
    this.state.dataset.phase = shown.phase;
    set(this.state, this.text(shown.phase));
    if (this.errorLine.hidden !== !this.error) this.errorLine.hidden = !this.error;
    set(this.errorLine, this.error ? this.text(this.error.key, this.error.detail) : "");
  }

  showError(err, seconds = 0) {
    // `err`: a LiveError (its text explains it), or anything else thrown (its message is shown). With `seconds`,
    // it goes away by itself (a refusal mid-talk); without, it stays until the next Start.
    this.error = err instanceof LiveError ? err : new LiveError("failed", { message: String((err && err.message) || err) });
    clearTimeout(this.errorTimer);
    if (seconds) this.errorTimer = setTimeout(() => this.clearError(), seconds * 1000);
    this.show(this.shown);
  }

  clearError() {
    this.error = null;
    this.show(this.shown);
  }

  bubble(key, role) {
    if (!this.bubbles.has(key)) {
      const node = document.createElement("div");
      node.className = `live-msg live-${role}`;
      node.append(document.createElement("span"));
      this.transcript.append(node);
      this.bubbles.set(key, node);
    }
    return this.bubbles.get(key);
  }

  say(key, role, text, textKey = null) {
    // A message's text, or with `textKey` one of the page's texts (translated with the page).
    const span = this.bubble(key, role).querySelector("span");
    if (textKey) span.dataset.text = textKey;
    else delete span.dataset.text;
    span.textContent = textKey ? this.text(textKey) : text;
    this.scrollDown();
  }

  note(key, textKey) {
    // A line under a reply (interrupted, failed).
    const node = this.bubble(key, "assistant");
    if (node.querySelector(".live-note")) return;
    const small = document.createElement("small");
    small.className = "live-note";
    small.dataset.text = textKey;
    small.textContent = this.text(textKey);
    node.append(small);
    this.scrollDown();
  }

  picture(key, url) {
    const img = document.createElement("img");
    img.src = url;
    img.alt = "";
    img.onload = () => this.scrollDown();
    this.bubble(key, "user").prepend(img);
  }

  clearTranscript() {
    this.bubbles.clear();
    this.transcript.replaceChildren();
  }

  scrollDown() {
    // Once a frame at most: reading scrollHeight lays the page out, which must not happen for every delta.
    if (this.scrolling) return;
    this.scrolling = requestAnimationFrame(() => {
      this.scrolling = null;
      this.transcript.scrollTop = this.transcript.scrollHeight;
    });
  }
}
