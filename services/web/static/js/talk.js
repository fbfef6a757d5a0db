// Talk: a full-duplex conversation with Moshi over /api/chat?format=pcm.
//
// Frames (Kyutai's chat framing): one kind byte, then the payload. 0 handshake (the server
// is ready), 1 audio (here raw float32 little-endian mono 24 kHz samples, both directions),
// 2 text (a UTF-8 piece of Moshi's text), 5 error (a UTF-8 message, then the server closes).
//
// Round trip: Moshi's audio frame n comes out of the step that consumes the user's frame
// n + 1 (its acoustic delay is one frame). So when the received audio reaches n + 1 whole
// frames, the time since frame n + 1 was sent is one round trip: network both ways, the
// server's queue and step, and nothing of the page's own buffering.

import { FRAME_SIZE, Microphone, Player, showLevel } from "./audio.js";
import { Socket } from "./connection.js";
import { byId, numberParams, setState } from "./ui.js";

const KIND = { handshake: 0, audio: 1, text: 2, error: 5 };
const SAMPLING = { temperature: "talk-temperature", top_k: "talk-top-k",
                   text_temperature: "talk-text-temperature", text_top_k: "talk-text-top-k",
                   seed: "talk-seed" };
const REPLY_DELAY_FRAMES = 1;
const textDecoder = new TextDecoder();

function median(values) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

export class Talk {
  constructor(page) {
    this.page = page;
    this.socket = null;
    this.mic = null;
    this.player = null;
    this.resetStats();
    byId("talk-connect").onclick = () => this.connect();
    byId("talk-disconnect").onclick = () => this.disconnect();
    byId("talk-retry").onclick = () => this.connect();
    setInterval(() => this.refresh(), 50);
  }

  resetStats() {
    // Read by the browser test too (window.moshiPage.talk.stats).
    this.stats = { state: "idle", framesSent: 0, samplesReceived: 0, textPieces: 0,
                   micRmsMax: 0, outputRmsMax: 0, latencies: [], latencyMs: null,
                   error: null };
    this.sentAt = [];
  }

  setEnabled(enabled) {
    byId("talk-connect").disabled = !enabled || this.socket !== null;
  }

  sampling() {
    return { format: "pcm", ...numberParams(SAMPLING) };
  }

  async connect() {
    if (this.socket) return;
    this.resetStats();
    byId("talk-text").textContent = "";
    byId("talk-retry").hidden = true;
    byId("talk-connect").disabled = true;
    byId("talk-disconnect").disabled = false;
    this.show("connecting", "connecting…");
    try {
      this.player = await Player.open();
      this.mic = await Microphone.open((pcm, level) => this.onMicrophone(pcm, level));
    } catch (error) {
      this.end({ kind: "error", message: `microphone: ${error.message}` });
      return;
    }
    const settings = this.mic.settings();
    byId("talk-mic-settings").textContent = "microphone: " + ["echoCancellation",
      "noiseSuppression", "autoGainControl"].map((k) => `${k} ${settings[k] ? "on" : "off"}`)
      .join(", ");
    this.socket = new Socket("api/chat", this.sampling(), this.page.token(), {
      onMessage: (data) => this.onMessage(data),
      onEnd: (error) => this.end(error),
    });
  }

  onMicrophone(pcm, level) {
    this.stats.micRmsMax = Math.max(this.stats.micRmsMax, level);
    this.micLevel = level;
    // Audio goes out only after the handshake: before it the server has no session yet.
    if (!this.socket || this.stats.state !== "connected") return;
    const frame = new Uint8Array(1 + pcm.byteLength);
    frame[0] = KIND.audio;
    frame.set(new Uint8Array(pcm.buffer, pcm.byteOffset, pcm.byteLength), 1);
    this.socket.send(frame);
    this.sentAt.push(performance.now());
    this.stats.framesSent += 1;
  }

  onMessage(data) {
    if (!(data instanceof ArrayBuffer) || data.byteLength === 0) return;
    const kind = new Uint8Array(data, 0, 1)[0];
    if (kind === KIND.handshake) {
      this.show("connected", "connected: talk!");
    } else if (kind === KIND.audio) {
      // slice copies: the samples start at byte 1, not on a 4-byte boundary.
      const pcm = new Float32Array(data.slice(1, 1 + 4 * Math.floor((data.byteLength - 1) / 4)));
      this.onAudio(pcm);
    } else if (kind === KIND.text) {
      const piece = textDecoder.decode(new Uint8Array(data, 1));
      byId("talk-text").append(piece);
      byId("talk-text").scrollTop = byId("talk-text").scrollHeight;
      this.stats.textPieces += 1;
    } else if (kind === KIND.error) {
      this.socket.error(textDecoder.decode(new Uint8Array(data, 1)));
    }
  }

  onAudio(pcm) {
    const before = Math.floor(this.stats.samplesReceived / FRAME_SIZE);
    this.stats.samplesReceived += pcm.length;
    const after = Math.floor(this.stats.samplesReceived / FRAME_SIZE);
    const now = performance.now();
    for (let frame = before; frame < after; frame++) {  // reply frame `frame` is complete
      const sent = this.sentAt[frame + REPLY_DELAY_FRAMES];
      if (sent !== undefined && now >= sent) {
        this.stats.latencies.push(now - sent);
        if (this.stats.latencies.length > 50) this.stats.latencies.shift();
      }
    }
    this.stats.latencyMs = median(this.stats.latencies);
    this.player.push(pcm);
  }

  refresh() {
    if (this.player) {
      const level = this.player.level();
      this.stats.outputRmsMax = Math.max(this.stats.outputRmsMax, level);
      showLevel(byId("talk-out-level"), level);
      const status = this.player.status;
      byId("talk-buffered").textContent = `${Math.round(status.buffered / 24)} ms`;
      byId("talk-underruns").textContent = `${status.underruns}`;
    }
    showLevel(byId("talk-mic-level"), this.mic ? this.micLevel || 0 : 0);
    byId("talk-sent").textContent = `${this.stats.framesSent} frames`;
    byId("talk-received").textContent =
      `${Math.floor(this.stats.samplesReceived / FRAME_SIZE)} frames`;
    const latencies = this.stats.latencies;
    byId("talk-latency").textContent = latencies.length
      ? `${Math.round(this.stats.latencyMs)} ms (median of ${latencies.length}; last `
        + `${Math.round(latencies[latencies.length - 1])} ms)` : "–";
  }

  disconnect() {
    if (this.socket) this.socket.close();
  }

  end(error) {
    if (this.mic) this.mic.close();
    if (this.player) this.player.close();
    this.mic = this.player = this.socket = null;
    this.micLevel = 0;
    byId("talk-disconnect").disabled = true;
    this.setEnabled(this.page.available("chat"));
    if (error) {
      this.stats.error = error.message;
      this.show(error.kind, this.page.explain(error), error, "talk-retry");
    } else {
      this.show("idle", "disconnected");
    }
  }

  show(state, text, error = null, retryId = null) {
    this.stats.state = state;
    setState(byId("talk-state"), state, text, error, retryId && byId(retryId));
  }
}
