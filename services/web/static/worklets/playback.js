// AudioWorklet processor "playback": plays 24 kHz mono samples as they arrive, with little
// buffering.
//
// The page posts Float32Array chunks ({ pcm }); they queue here and play once `start`
// samples are buffered (one 80 ms frame by default: enough to ride over a late websocket
// message, short enough to keep the conversation's latency down). When the queue runs dry
// the output is silence and playback waits for `start` samples again (an underrun, counted);
// when more than `max` samples queue up (the network delivered a burst after a stall), the
// oldest are dropped so latency does not grow for the rest of the call. A burst below `max`
// would still leave a standing queue (audio then arrives as fast as it plays, so the queue
// never drains): with `trim` seconds, when the queue never fell below `start` plus one frame
// during that long of playing, the excess is dropped (a jitter buffer's standing-queue rule: a queue
// that absorbs no jitter is only latency). { flush: true } says no more is coming: what is
// queued plays even if shorter than `start`. { clear: true } empties the queue. A status
// ({ buffered, played, underruns, dropped }, in samples at 24 kHz) is posted about every
// 100 ms.
// Processor options: { rate: 24000, start: 1920, max: 12000, trim: 0 } (max 0: never drop;
// trim 0: never trim).

class PlaybackProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const { rate = 24000, start = 1920, max = 12000, trim = 0 } = options.processorOptions || {};
    this.step = rate / sampleRate;  // queued samples per output sample
    this.start = start;
    this.max = max;
    this.trimWindow = trim * sampleRate;  // output samples per look at the standing queue
    this.slack = 1920;                    // one frame of jitter the queue may keep
    this.sinceTrim = 0;
    this.lowest = Infinity;               // the least buffered during the window
    this.queue = [];
    this.offset = 0;    // fractional read position inside queue[0]
    this.buffered = 0;  // samples queued, minus those read
    this.playing = false;
    this.flushing = false;
    this.played = 0;
    this.underruns = 0;
    this.dropped = 0;
    this.sinceStatus = 0;
    this.port.onmessage = (event) => {
      const { pcm, clear, flush } = event.data;
      if (flush) this.flushing = true;
      if (clear) {
        this.flushing = false;
        this.queue = [];
        this.offset = 0;
        this.buffered = 0;
        this.playing = false;
      }
      if (pcm && pcm.length) {
        this.flushing = false;
        this.queue.push(pcm);
        this.buffered += pcm.length;
        if (this.max && this.buffered > this.max) this.drop(this.buffered - this.start);
      }
    };
  }

  drop(n) {
    while (n > 0 && this.queue.length) {
      const left = this.queue[0].length - Math.floor(this.offset);
      if (left > n) { this.offset += n; this.buffered -= n; this.dropped += n; return; }
      this.queue.shift();
      this.offset = 0;
      this.buffered -= left;
      this.dropped += left;
      n -= left;
    }
  }

  next() {
    // The sample at the read position (nearest-lower: the context runs at 24 kHz when the
    // browser allows it, and then step is exactly 1).
    const head = this.queue[0];
    const x = head[Math.floor(this.offset)];
    const before = Math.floor(this.offset);
    this.offset += this.step;
    const consumed = Math.floor(this.offset) - before;
    this.buffered -= consumed;
    this.played += consumed;
    if (this.offset >= head.length) {
      this.offset -= head.length;
      this.queue.shift();
    }
    return x;
  }

  trim(rendered) {
    // The window counts playing time only: a queue that is not playing (not started yet, or
    // just run dry) stands for nothing, and a late first message must not shorten the window.
    if (!this.playing) {
      this.sinceTrim = 0;
      this.lowest = Infinity;
      return;
    }
    this.lowest = Math.min(this.lowest, this.buffered);
    this.sinceTrim += rendered;
    if (this.sinceTrim < this.trimWindow) return;
    if (this.lowest > this.start + this.slack) this.drop(this.lowest - this.start);
    this.sinceTrim = 0;
    this.lowest = Infinity;
  }

  process(inputs, outputs) {
    const output = outputs[0];
    const channel = output[0];
    if (!this.playing && (this.buffered >= this.start || (this.flushing && this.buffered > 0))) {
      this.playing = true;
    }
    for (let i = 0; i < channel.length; i++) {
      if (this.playing && this.queue.length) {
        channel[i] = this.next();
      } else {
        if (this.playing) {
          this.playing = false;
          if (!this.flushing) this.underruns += 1;  // the end of a stream is no underrun
        }
        channel[i] = 0;
      }
    }
    for (let c = 1; c < output.length; c++) output[c].set(channel);
    if (this.trimWindow) this.trim(channel.length);
    this.sinceStatus += channel.length;
    if (this.sinceStatus >= sampleRate / 10) {
      this.sinceStatus = 0;
      this.port.postMessage({ buffered: this.buffered, played: this.played,
                              underruns: this.underruns, dropped: this.dropped,
                              playing: this.playing });
    }
    return true;
  }
}

registerProcessor("playback", PlaybackProcessor);
