// Small DOM helpers shared by the panels.

export function byId(id) {
  const element = document.getElementById(id);
  if (!element) throw new Error(`no element #${id}`);
  return element;
}

/**
 * Shows a panel's state: `state` is a class ("connected", "full", "auth", ...), `text` what
 * the user reads. For a full server (`error.retryIn` seconds) the retry button counts down
 * and is enabled when the server said it is worth retrying; other errors offer a retry at
 * once.
 */
export function setState(element, state, text, error = null, retry = null) {
  element.className = `state ${state}`;
  element.textContent = text;
  element.dataset.state = state;
  if (!retry) return;
  clearInterval(retry.countdown);
  retry.hidden = error === null || error.kind === "auth";
  if (retry.hidden) return;
  let left = Math.ceil(error.retryIn || 0);
  const tick = () => {
    retry.disabled = left > 0;
    retry.textContent = left > 0 ? `Retry in ${left} s` : "Retry";
    left -= 1;
    if (left < 0) clearInterval(retry.countdown);
  };
  tick();
  if (left >= 0) retry.countdown = setInterval(tick, 1000);
}

/** Appends a word to a transcript: its text, its time in a tooltip and a small label. */
export function addWord(container, text, start, end = null) {
  const word = document.createElement("span");
  word.className = "word";
  word.dataset.start = start.toFixed(2);
  const time = document.createElement("small");
  time.textContent = `${start.toFixed(2)}`;
  word.append(time, document.createTextNode(text));
  word.title = end === null ? `${start.toFixed(2)} s` : `${start.toFixed(2)}–${end.toFixed(2)} s`;
  container.append(word, " ");
  container.scrollTop = container.scrollHeight;
  return word;
}

export function setWordEnd(word, end) {
  word.dataset.end = end.toFixed(2);
  word.title = `${word.dataset.start}–${end.toFixed(2)} s`;
}

/** Query parameters from number inputs: {name: id} -> {name: value} (empty: left out, the
 * server's default). */
export function numberParams(ids) {
  const params = {};
  for (const [name, id] of Object.entries(ids)) params[name] = byId(id).value.trim();
  return params;
}
