// AudioWorklet processor "capture": the microphone, cut into chunks of 24 kHz mono samples.
//
// Runs on the audio rendering thread: every render quantum (128 samples at the context's rate)
// it takes the first channel, resamples it to 24 kHz when the context runs at another rate
// (linear interpolation: the page asks for a 24 kHz context, so this is only a fallback for
// browsers that refuse one), and posts each full chunk to the page with its RMS level.
// Processor options: { rate: 24000, chunk: 1920 } (1920 samples = one 80 ms Mimi frame).

class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const { rate = 24000, chunk = 1920 } = options.processorOptions || {};
    this.step = sampleRate / rate;  // input samples per output sample
    this.chunk = new Float32Array(chunk);
    this.filled = 0;
    this.position = 0;  // where the next output sample falls, in input samples from `last`
    this.last = 0;      // the previous quantum's last input sample (for interpolation)
    this.enabled = true;
    this.port.onmessage = (event) => {
      if ("enabled" in event.data) this.enabled = event.data.enabled;
    };
  }

  push(x) {
    this.chunk[this.filled++] = x;
    if (this.filled === this.chunk.length) {
      let energy = 0;
      for (const v of this.chunk) energy += v * v;
      const pcm = this.chunk.slice();
      this.port.postMessage({ pcm, rms: Math.sqrt(energy / pcm.length) }, [pcm.buffer]);
      this.filled = 0;
    }
  }

  process(inputs) {
    const input = inputs[0] && inputs[0][0];
    if (!input || !this.enabled) return true;
    if (this.step === 1) {
      for (const x of input) this.push(x);
      return true;
    }
    // Input sample i sits at position i + 1 relative to `last` (at 0).
    while (this.position <= input.length) {
      const i = Math.floor(this.position);
      const frac = this.position - i;
      const a = i === 0 ? this.last : input[i - 1];
      const b = i < input.length ? input[i] : a;
      this.push(a + (b - a) * frac);
      this.position += this.step;
    }
    this.position -= input.length;
    this.last = input[input.length - 1];
    return true;
  }
}

registerProcessor("capture", CaptureProcessor);
