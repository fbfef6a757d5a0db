// Audio in and out of the page: one AudioContext at 24 kHz (Mimi's rate, so neither side
// resamples in JavaScript), the microphone through the "capture" worklet, playback through
// the "playback" worklet followed by an analyser (the output level meter, and what the
// browser test reads to know Moshi's audio was played), and WAV files in and out.

export const SAMPLE_RATE = 24000;
export const FRAME_SIZE = 1920;  // samples: one 80 ms Mimi frame

let contextPromise = null;

/** The page's AudioContext with both worklets loaded (created once, resumed each call). */
export async function audioContext() {
  if (contextPromise === null) {
    contextPromise = (async () => {
      let context;
      try {
        context = new AudioContext({ sampleRate: SAMPLE_RATE, latencyHint: "interactive" });
      } catch (error) {
        // A browser that cannot run at 24 kHz: the worklets resample.
        context = new AudioContext({ latencyHint: "interactive" });
      }
      await context.audioWorklet.addModule("static/worklets/capture.js");
      await context.audioWorklet.addModule("static/worklets/playback.js");
      return context;
    })();
  }
  const context = await contextPromise;
  if (context.state !== "running") await context.resume();
  return context;
}

/** Root mean square of `samples`. */
export function rms(samples) {
  let energy = 0;
  for (const x of samples) energy += x * x;
  return samples.length ? Math.sqrt(energy / samples.length) : 0;
}

/** The microphone as 80 ms chunks of 24 kHz samples: `onChunk(pcm, rms)` for each. */
export class Microphone {
  static async open(onChunk) {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new Error("this browser allows the microphone only on https:// or localhost pages: "
                      + "serve with --tls-cert and --tls-key, or reach the server as localhost "
                      + "(e.g. ssh -L 8080:localhost:8080)");
    }
    const context = await audioContext();
    // Echo cancellation matters most: Moshi hears whatever the speakers play. Noise
    // suppression and gain control keep the level the model sees steady.
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true,
               channelCount: 1 },
    });
    return new Microphone(context, stream, onChunk);
  }

  constructor(context, stream, onChunk) {
    this.stream = stream;
    this.source = context.createMediaStreamSource(stream);
    this.node = new AudioWorkletNode(context, "capture", {
      numberOfInputs: 1, numberOfOutputs: 0,
      processorOptions: { rate: SAMPLE_RATE, chunk: FRAME_SIZE },
    });
    this.node.port.onmessage = (event) => onChunk(event.data.pcm, event.data.rms);
    this.source.connect(this.node);
  }

  /** What the browser granted of the constraints asked for. */
  settings() {
    const track = this.stream.getAudioTracks()[0];
    return track ? track.getSettings() : {};
  }

  close() {
    this.node.port.onmessage = null;
    this.source.disconnect();
    for (const track of this.stream.getTracks()) track.stop();
  }
}

/** Plays 24 kHz chunks as they come; `level()` is the output's RMS now (analyser). */
export class Player {
  static async open(options = {}) {
    return new Player(await audioContext(), options);
  }

  // Defaults for a conversation: start after one frame, never more than 480 ms queued, and a
  // queue that stood above two frames for a whole second is cut back (playback worklet).
  constructor(context, { start = FRAME_SIZE, max = 6 * FRAME_SIZE, trim = 1 } = {}) {
    this.node = new AudioWorkletNode(context, "playback", {
      numberOfInputs: 0, numberOfOutputs: 1, outputChannelCount: [1],
      processorOptions: { rate: SAMPLE_RATE, start, max, trim },
    });
    this.analyser = context.createAnalyser();
    this.analyser.fftSize = 2048;
    this.samples = new Float32Array(this.analyser.fftSize);
    this.node.connect(this.analyser);
    this.analyser.connect(context.destination);
    this.status = { buffered: 0, played: 0, underruns: 0, dropped: 0, playing: false };
    this.node.port.onmessage = (event) => { this.status = event.data; };
  }

  push(pcm) { this.node.port.postMessage({ pcm }, [pcm.buffer]); }
  flush() { this.node.port.postMessage({ flush: true }); }
  clear() { this.node.port.postMessage({ clear: true }); }

  level() {
    this.analyser.getFloatTimeDomainData(this.samples);
    return rms(this.samples);
  }

  close() {
    this.node.port.onmessage = null;
    this.node.disconnect();
    this.analyser.disconnect();
  }
}

/** A file's audio (anything the browser decodes) as 24 kHz mono samples. */
export async function decodeFile(file) {
  const context = await audioContext();
  const decoded = await context.decodeAudioData(await file.arrayBuffer());
  const length = Math.ceil(decoded.duration * SAMPLE_RATE);
  // An offline context renders the mix-down to mono and the resampling to 24 kHz.
  const offline = new OfflineAudioContext(1, Math.max(length, 1), SAMPLE_RATE);
  const source = offline.createBufferSource();
  source.buffer = decoded;
  source.connect(offline.destination);
  source.start();
  const rendered = await offline.startRendering();
  return rendered.getChannelData(0);
}

/** A 16-bit PCM WAV file (Blob) of 24 kHz mono `samples`. */
export function wavBlob(samples, rate = SAMPLE_RATE) {
  const view = new DataView(new ArrayBuffer(44 + 2 * samples.length));
  const text = (at, s) => { for (let i = 0; i < s.length; i++) view.setUint8(at + i, s.charCodeAt(i)); };
  text(0, "RIFF");
  view.setUint32(4, 36 + 2 * samples.length, true);
  text(8, "WAVE");
  text(12, "fmt ");
  view.setUint32(16, 16, true);      // fmt chunk size
  view.setUint16(20, 1, true);       // PCM
  view.setUint16(22, 1, true);       // mono
  view.setUint32(24, rate, true);
  view.setUint32(28, 2 * rate, true);  // bytes per second
  view.setUint16(32, 2, true);       // bytes per frame
  view.setUint16(34, 16, true);      // bits per sample
  text(36, "data");
  view.setUint32(40, 2 * samples.length, true);
  for (let i = 0; i < samples.length; i++) {
    const x = Math.max(-1, Math.min(1, samples[i]));
    view.setInt16(44 + 2 * i, Math.round(x * 32767), true);
  }
  return new Blob([view.buffer], { type: "audio/wav" });
}

/** A level meter: a bar element whose width follows an RMS (on a dB scale), falling back
 * smoothly (so the gaps between syllables do not blank it). */
export function showLevel(bar, level) {
  const shown = Math.max(level, (parseFloat(bar.dataset.level) || 0) * 0.85);
  bar.dataset.level = String(shown);
  const db = 20 * Math.log10(Math.max(shown, 1e-5));  // -100 dB .. 0 dB
  const fraction = Math.max(0, Math.min(1, (db + 60) / 60));
  bar.style.width = `${(100 * fraction).toFixed(1)}%`;
}
