// Speak: text -> speech as it is produced, over /api/tts_streaming (Kyutai's messages,
// MessagePack maps with a "type" key), the voice picked from /api/voices.
//
// Query: voice, format=PcmMessagePack (audio as MessagePack arrays of float samples), and
// optionally temperature, top_k, seed.
// In: {type: "Text", text}, then {type: "Eos"} (no more text).
// Out: {type: "Ready"}, {type: "Audio", pcm: [24 kHz float samples]},
//      {type: "Text", text, start_s, stop_s} (a word and when it is spoken),
//      {type: "Error", message}; the server closes the socket when the audio is complete.

import { Player, SAMPLE_RATE, showLevel, wavBlob } from "./audio.js";
import { Socket } from "./connection.js";
import { decode, encode } from "./msgpack.js";
import { addWord, byId, numberParams, setState } from "./ui.js";

const SAMPLING = { temperature: "tts-temperature", top_k: "tts-top-k", seed: "tts-seed" };

export class Speak {
  constructor(page) {
    this.page = page;
    this.socket = null;
    this.player = null;
    this.resetStats();
    byId("tts-speak").onclick = () => this.speak();
    byId("tts-stop").onclick = () => this.stop();
    byId("tts-retry").onclick = () => this.speak();
    setInterval(() => this.refresh(), 50);
  }

  resetStats() {
    // Read by the browser test too (window.moshiPage.speak.stats).
    this.stats = { state: "idle", words: [], samplesReceived: 0, outputRmsMax: 0,
                   download: null, done: false, error: null };
    this.chunks = [];
  }

  setEnabled(enabled) {
    byId("tts-speak").disabled = !enabled || this.socket !== null;
  }

  /** The voices of /api/voices into the picker, the default one selected. */
  setVoices(voices, defaultVoice) {
    const select = byId("tts-voice");
    select.textContent = "";
    const names = voices.length ? voices : [defaultVoice || ""];
    for (const name of names) {
      const option = document.createElement("option");
      option.value = name;
      option.textContent = name || "the model's own voice";
      option.selected = name === defaultVoice;
      select.append(option);
    }
  }

  async speak() {
    const text = byId("tts-text").value.trim();
    if (this.socket || !text) return;
    this.resetStats();
    const download = byId("tts-download");
    if (download.href) URL.revokeObjectURL(download.href);
    download.hidden = true;
    download.removeAttribute("href");
    byId("tts-words").textContent = "";
    byId("tts-retry").hidden = true;
    byId("tts-stop").disabled = false;
    this.show("connecting", "connecting…");
    if (this.player) this.player.close();
    // Never drop: all of the speech is wanted (it may come faster than it plays).
    this.player = await Player.open({ max: 0, trim: 0 });
    const params = { voice: byId("tts-voice").value, format: "PcmMessagePack",
                     ...numberParams(SAMPLING) };
    this.socket = new Socket("api/tts_streaming", params, this.page.token(), {
      onOpen: () => {
        this.show("connected", "synthesizing…");
        this.socket.send(encode({ type: "Text", text }));
        this.socket.send(encode({ type: "Eos" }));
      },
      onMessage: (data) => this.onMessage(data),
      onEnd: (error) => this.end(error),
    });
    this.setEnabled(false);
    this.startedAt = performance.now();
  }

  onMessage(data) {
    let message;
    try {
      message = decode(data);
    } catch (error) {
      this.socket.error(`unreadable message from the server: ${error.message}`);
      this.socket.close();
      return;
    }
    if (message.type === "Audio") {
      const pcm = Float32Array.from(message.pcm);
      if (this.stats.samplesReceived === 0) {
        this.stats.firstAudioMs = performance.now() - this.startedAt;
      }
      this.stats.samplesReceived += pcm.length;
      this.chunks.push(pcm.slice());
      this.player.push(pcm);
    } else if (message.type === "Text") {
      addWord(byId("tts-words"), message.text, message.start_s, message.stop_s);
      this.stats.words.push({ text: message.text, start: message.start_s });
    } else if (message.type === "Error") {
      this.socket.error(message.message);
    }
  }

  refresh() {
    if (!this.player) return;
    const level = this.player.level();
    this.stats.outputRmsMax = Math.max(this.stats.outputRmsMax, level);
    showLevel(byId("tts-level"), level);
    const seconds = this.stats.samplesReceived / SAMPLE_RATE;
    const first = this.stats.firstAudioMs;
    byId("tts-figures").textContent = `${seconds.toFixed(2)} s of audio received`
      + (first === undefined ? "" : `, the first after ${Math.round(first)} ms`);
  }

  stop() {
    if (this.socket) this.socket.close();
  }

  end(error) {
    this.socket = null;
    byId("tts-stop").disabled = true;
    this.setEnabled(this.page.available("tts"));
    if (this.player) this.player.flush();  // what is left plays out
    if (this.chunks.length) {
      const total = this.chunks.reduce((n, c) => n + c.length, 0);
      const samples = new Float32Array(total);
      let at = 0;
      for (const chunk of this.chunks) { samples.set(chunk, at); at += chunk.length; }
      const blob = wavBlob(samples);
      const download = byId("tts-download");
      download.href = URL.createObjectURL(blob);
      download.hidden = false;
      this.stats.download = { bytes: blob.size, samples: total };
    }
    if (error) {
      this.stats.error = error.message;
      this.show(error.kind, this.page.explain(error), error, "tts-retry");
    } else {
      this.stats.done = true;
      this.show("done", `done: ${(this.stats.samplesReceived / SAMPLE_RATE).toFixed(2)} s`);
    }
  }

  show(state, text, error = null, retryId = null) {
    this.stats.state = state;
    setState(byId("tts-state"), state, text, error, retryId && byId(retryId));
  }
}
