// Transcribe: the microphone or a dropped file -> words with their times, over
// /api/asr-streaming (Kyutai's messages, MessagePack maps with a "type" key).
//
// Query (optional): temperature, top_k, seed of the text sampling (greedy by default).
// In: {type: "Audio", pcm: [24 kHz float samples]}, {type: "Marker", id}.
// Out: {type: "Word", text, start_time}, {type: "EndWord", stop_time},
//      {type: "Step", step_idx, prs: [pause probability per head], buffered_pcm},
//      {type: "Marker", id} (once the audio sent before it is processed), {type: "Ready"},
//      {type: "Error", message}.
//
// The last words come out only after the model's text delay: at the end the page sends a
// marker, then silence until the marker is back (every word is out by then; at most
// FLUSH_SECONDS of it, longer than any model's delay), and closes.
//
// End of turn, when the model has pause heads: the rule of Kyutai's reference example (and
// of services/asr/vad.py), head 2's pause probability above 0.5, once per turn, a turn
// beginning with its first word.

import { FRAME_SIZE, Microphone, SAMPLE_RATE, decodeFile, rms, showLevel } from "./audio.js";
import { Socket } from "./connection.js";
import { encode, decode } from "./msgpack.js";
import { addWord, byId, numberParams, setState, setWordEnd } from "./ui.js";

const SAMPLING = { temperature: "asr-temperature", top_k: "asr-top-k", seed: "asr-seed" };
const FLUSH_SECONDS = 10;
const SILENCE_FRAME_MS = 20;  // silence goes 4x faster than real time: the wait is short
const END_OF_TURN_HEAD = 2;
const END_OF_TURN_THRESHOLD = 0.5;
const MARKER_TIMEOUT_MS = 20000;
const MAX_BUFFERED_BYTES = 1 << 18;  // a file is sent as fast as this much in flight allows

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class Transcribe {
  constructor(page) {
    this.page = page;
    this.socket = null;
    this.mic = null;
    this.level = 0;
    this.resetStats();
    byId("asr-mic").onclick = () => this.start(null);
    byId("asr-stop").onclick = () => this.stop();
    byId("asr-retry").onclick = () => this.start(this.lastFile);
    const input = byId("asr-file");
    input.onchange = () => { if (input.files[0]) this.start(input.files[0]); input.value = ""; };
    const zone = byId("asr-drop");
    zone.ondragover = (event) => { event.preventDefault(); zone.classList.add("over"); };
    zone.ondragleave = () => zone.classList.remove("over");
    zone.ondrop = (event) => {
      event.preventDefault();
      zone.classList.remove("over");
      const file = event.dataTransfer.files[0];
      if (file) this.start(file);
    };
    setInterval(() => showLevel(byId("asr-level"), this.level), 50);
  }

  resetStats() {
    // Read by the browser test too (window.moshiPage.transcribe.stats).
    this.stats = { state: "idle", words: [], endOfTurns: 0, steps: 0, samplesSent: 0,
                   done: false, error: null };
    this.inTurn = false;
    this.lastWord = null;
  }

  setEnabled(enabled) {
    const busy = this.socket !== null;
    byId("asr-mic").disabled = !enabled || busy;
    byId("asr-file").disabled = !enabled || busy;
    byId("asr-drop").classList.toggle("disabled", !enabled || busy);
  }

  /** Starts transcribing `file` (a File), or the microphone when null. */
  async start(file) {
    if (this.socket || !this.page.available("asr")) return;
    this.resetStats();
    this.lastFile = file;
    byId("asr-words").textContent = "";
    byId("asr-retry").hidden = true;
    byId("asr-stop").disabled = false;
    this.setEnabled(false);
    this.show("connecting", file ? `reading ${file.name}…` : "connecting…");
    let samples = null;
    try {
      if (file) samples = await decodeFile(file);
      else this.mic = await Microphone.open((pcm, level) => this.onMicrophone(pcm, level));
    } catch (error) {
      this.end({ kind: "error", message: `${file ? file.name : "microphone"}: ${error.message}` });
      return;
    }
    this.markerId = Math.floor(Math.random() * 1e9);
    this.socket = new Socket("api/asr-streaming", numberParams(SAMPLING), this.page.token(), {
      onOpen: () => {
        this.show("connected", file ? `transcribing ${file.name}` : "listening…");
        if (samples) this.sendFile(samples);
      },
      onMessage: (data) => this.onMessage(data),
      onEnd: (error) => this.end(error),
    });
    this.setEnabled(false);
  }

  sendAudio(pcm) {
    this.socket.send(encode({ type: "Audio", pcm }));
    this.stats.samplesSent += pcm.length;
  }

  onMicrophone(pcm, level) {
    this.level = level;
    if (this.socket && this.socket.open && !this.finishing) this.sendAudio(pcm);
  }

  async sendFile(samples) {
    const sending = () => this.socket && this.socket.open && !this.finishing;  // Stop ends it
    for (let at = 0; at < samples.length && sending(); at += FRAME_SIZE) {
      while (sending() && this.socket.buffered > MAX_BUFFERED_BYTES) await sleep(10);
      if (!sending()) return;
      const pcm = samples.slice(at, at + FRAME_SIZE);
      this.level = rms(pcm);
      this.sendAudio(pcm);
      if ((at / FRAME_SIZE) % 25 === 0) await sleep(0);  // let the page draw
    }
    this.level = 0;
    this.finish();
  }

  /** No more audio: a marker, then silence until the marker comes back (the server returns
   * it once the words of the audio before it are out, the model's text delay later). */
  async finish() {
    if (!this.socket || this.finishing) return;
    this.finishing = true;
    if (this.mic) { this.mic.close(); this.mic = null; this.level = 0; }
    this.socket.send(encode({ type: "Marker", id: this.markerId }));
    this.show("finishing", "finishing: the last words come after the model's delay…");
    this.markerTimer = setTimeout(() => this.socket && this.socket.close(), MARKER_TIMEOUT_MS);
    const silence = encode({ type: "Audio", pcm: new Float32Array(FRAME_SIZE) });
    for (let i = 0; i < FLUSH_SECONDS * SAMPLE_RATE / FRAME_SIZE; i++) {
      while (this.socket && this.socket.buffered > MAX_BUFFERED_BYTES) await sleep(10);
      if (!this.socket || this.stats.done) return;
      this.socket.send(silence);  // not counted as audio sent
      await sleep(SILENCE_FRAME_MS);
    }
  }

  stop() {
    if (this.socket && this.socket.open) this.finish();
    else if (this.socket) this.socket.close();
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
    switch (message.type) {
      case "Word":
        this.lastWord = addWord(byId("asr-words"), message.text, message.start_time);
        this.stats.words.push({ text: message.text, start: message.start_time });
        this.inTurn = true;
        break;
      case "EndWord":
        if (this.lastWord) setWordEnd(this.lastWord, message.stop_time);
        break;
      case "Step":
        this.stats.steps += 1;
        this.onPauses(message.prs || []);
        break;
      case "Marker":
        if (message.id === this.markerId) {
          this.stats.done = true;
          this.socket.close();
        }
        break;
      case "Error":
        this.socket.error(message.message);
        break;
      default:  // "Ready" and anything newer
        break;
    }
  }

  onPauses(prs) {
    if (!this.page.pauseHeads || prs.length <= END_OF_TURN_HEAD) return;
    if (this.inTurn && prs[END_OF_TURN_HEAD] > END_OF_TURN_THRESHOLD) {
      this.inTurn = false;
      this.stats.endOfTurns += 1;
      const mark = document.createElement("span");
      mark.className = "end-of-turn";
      mark.textContent = "⏎ end of turn";
      byId("asr-words").append(mark);
    }
  }

  end(error) {
    clearTimeout(this.markerTimer);
    if (this.mic) this.mic.close();
    this.mic = this.socket = null;
    this.finishing = false;
    this.level = 0;
    byId("asr-stop").disabled = true;
    this.setEnabled(this.page.available("asr"));
    if (error) {
      this.stats.error = error.message;
      this.show(error.kind, this.page.explain(error), error, "asr-retry");
    } else {
      const n = this.stats.words.length;
      this.show("done", `done: ${n} word${n === 1 ? "" : "s"} in `
        + `${(this.stats.samplesSent / SAMPLE_RATE).toFixed(1)} s of audio`);
    }
  }

  show(state, text, error = null, retryId = null) {
    this.stats.state = state;
    setState(byId("asr-state"), state, text, error, retryId && byId(retryId));
  }
}
