// A small MessagePack encoder and decoder: what Kyutai's ASR and TTS websocket messages use
// (maps with a "type" key, strings, numbers, arrays of float samples). Written for this page
// from the MessagePack specification (https://github.com/msgpack/msgpack/blob/master/spec.md);
// no dependency, no build step.
//
// Encoding: null, booleans, numbers (safe integers as the smallest int, others as float64),
// strings, arrays, Float32Array (an array of float32: audio samples), Uint8Array (bin) and
// plain objects (maps with string keys). Decoding: every type but ext; 64-bit integers
// become Numbers (exact up to 2^53).

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();

class Writer {
  constructor(size = 256) {
    this.bytes = new Uint8Array(size);
    this.view = new DataView(this.bytes.buffer);
    this.length = 0;
  }

  reserve(n) {
    if (this.length + n <= this.bytes.length) return;
    let size = this.bytes.length * 2;
    while (size < this.length + n) size *= 2;
    const bytes = new Uint8Array(size);
    bytes.set(this.bytes.subarray(0, this.length));
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer);
  }

  u8(x) { this.reserve(1); this.view.setUint8(this.length, x); this.length += 1; }
  u16(x) { this.reserve(2); this.view.setUint16(this.length, x); this.length += 2; }
  u32(x) { this.reserve(4); this.view.setUint32(this.length, x); this.length += 4; }
  f32(x) { this.reserve(4); this.view.setFloat32(this.length, x); this.length += 4; }
  f64(x) { this.reserve(8); this.view.setFloat64(this.length, x); this.length += 8; }
  raw(bytes) { this.reserve(bytes.length); this.bytes.set(bytes, this.length); this.length += bytes.length; }

  // A length header: the fix form when it fits, else the 8- (if any), 16- or 32-bit form.
  header(n, fix, fixMax, code8, code16, code32) {
    if (n <= fixMax) this.u8(fix | n);
    else if (code8 !== null && n < 0x100) { this.u8(code8); this.u8(n); }
    else if (n < 0x10000) { this.u8(code16); this.u16(n); }
    else { this.u8(code32); this.u32(n); }
  }
}

function writeInteger(w, x) {
  if (x >= 0) {
    if (x < 0x80) w.u8(x);
    else if (x < 0x100) { w.u8(0xcc); w.u8(x); }
    else if (x < 0x10000) { w.u8(0xcd); w.u16(x); }
    else if (x < 0x100000000) { w.u8(0xce); w.u32(x); }
    else { w.u8(0xcf); w.u32(Math.floor(x / 0x100000000)); w.u32(x >>> 0); }
  } else if (x >= -32) {
    w.u8(x & 0xff);  // negative fixint
  } else if (x >= -0x80) { w.u8(0xd0); w.u8(x & 0xff); }
  else if (x >= -0x8000) { w.u8(0xd1); w.u16(x & 0xffff); }
  else if (x >= -0x80000000) { w.u8(0xd2); w.u32(x >>> 0); }
  else {  // int64, two's complement in two 32-bit halves
    const high = Math.floor(x / 0x100000000);
    w.u8(0xd3); w.u32(high >>> 0); w.u32((x - high * 0x100000000) >>> 0);
  }
}

function write(w, value) {
  if (value === null || value === undefined) w.u8(0xc0);
  else if (value === false) w.u8(0xc2);
  else if (value === true) w.u8(0xc3);
  else if (typeof value === "number") {
    if (Number.isSafeInteger(value)) writeInteger(w, value);
    else { w.u8(0xcb); w.f64(value); }
  } else if (typeof value === "string") {
    const bytes = textEncoder.encode(value);
    w.header(bytes.length, 0xa0, 31, 0xd9, 0xda, 0xdb);
    w.raw(bytes);
  } else if (value instanceof Float32Array) {
    w.header(value.length, 0x90, 15, null, 0xdc, 0xdd);
    w.reserve(5 * value.length);
    for (const x of value) { w.u8(0xca); w.f32(x); }
  } else if (value instanceof Uint8Array) {
    w.header(value.length, 0, -1, 0xc4, 0xc5, 0xc6);
    w.raw(value);
  } else if (Array.isArray(value)) {
    w.header(value.length, 0x90, 15, null, 0xdc, 0xdd);
    for (const item of value) write(w, item);
  } else if (typeof value === "object") {
    const keys = Object.keys(value).filter((k) => value[k] !== undefined);
    w.header(keys.length, 0x80, 15, null, 0xde, 0xdf);
    for (const key of keys) { write(w, key); write(w, value[key]); }
  } else {
    throw new TypeError(`msgpack: cannot encode a ${typeof value}`);
  }
}

/** The MessagePack bytes of `value`. */
export function encode(value) {
  const w = new Writer();
  write(w, value);
  return w.bytes.slice(0, w.length);
}

class Reader {
  constructor(bytes) {
    this.bytes = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
    this.view = new DataView(this.bytes.buffer, this.bytes.byteOffset, this.bytes.byteLength);
    this.at = 0;
  }

  need(n) {
    if (this.at + n > this.bytes.length) throw new RangeError("msgpack: message cut short");
    const at = this.at;
    this.at += n;
    return at;
  }

  u8() { return this.view.getUint8(this.need(1)); }
  u16() { return this.view.getUint16(this.need(2)); }
  u32() { return this.view.getUint32(this.need(4)); }
  i8() { return this.view.getInt8(this.need(1)); }
  i16() { return this.view.getInt16(this.need(2)); }
  i32() { return this.view.getInt32(this.need(4)); }
  u64() { const high = this.u32(); return high * 0x100000000 + this.u32(); }
  i64() { const high = this.i32(); return high * 0x100000000 + this.u32(); }
  f32() { return this.view.getFloat32(this.need(4)); }
  f64() { return this.view.getFloat64(this.need(8)); }
  str(n) { const at = this.need(n); return textDecoder.decode(this.bytes.subarray(at, at + n)); }
  bin(n) { const at = this.need(n); return this.bytes.slice(at, at + n); }
  array(n) { const items = new Array(n); for (let i = 0; i < n; i++) items[i] = this.value(); return items; }
  map(n) {
    const map = {};
    for (let i = 0; i < n; i++) { const key = this.value(); map[key] = this.value(); }
    return map;
  }

  value() {
    const code = this.u8();
    if (code < 0x80) return code;
    if (code < 0x90) return this.map(code & 0x0f);
    if (code < 0xa0) return this.array(code & 0x0f);
    if (code < 0xc0) return this.str(code & 0x1f);
    if (code >= 0xe0) return code - 0x100;
    switch (code) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: return this.bin(this.u8());
      case 0xc5: return this.bin(this.u16());
      case 0xc6: return this.bin(this.u32());
      case 0xca: return this.f32();
      case 0xcb: return this.f64();
      case 0xcc: return this.u8();
      case 0xcd: return this.u16();
      case 0xce: return this.u32();
      case 0xcf: return this.u64();
      case 0xd0: return this.i8();
      case 0xd1: return this.i16();
      case 0xd2: return this.i32();
      case 0xd3: return this.i64();
      case 0xd9: return this.str(this.u8());
      case 0xda: return this.str(this.u16());
      case 0xdb: return this.str(this.u32());
      case 0xdc: return this.array(this.u16());
      case 0xdd: return this.array(this.u32());
      case 0xde: return this.map(this.u16());
      case 0xdf: return this.map(this.u32());
      default: throw new TypeError(`msgpack: unsupported type byte 0x${code.toString(16)}`);
    }
  }
}

/** The value of MessagePack `bytes` (an ArrayBuffer or Uint8Array holding one value). */
export function decode(bytes) {
  const reader = new Reader(bytes);
  const value = reader.value();
  if (reader.at !== reader.bytes.length) throw new RangeError("msgpack: bytes after the value");
  return value;
}
