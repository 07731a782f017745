// How the stage looks: what it paints behind the avatar, and the app's captions.
//
// The app sends two commands through stage.js (see core/events.py): `look` (the background,
// the caption style, and whether this page is the audience output) and `caption` (the phrase
// the avatar is saying, or null). The caption text comes from the app, which matches the SDK's
// speaking events to the lines it sent, so it works with the official Web SDK and the
// simulated one alike.
//
// Everything is applied through classes, data attributes and CSS custom properties (CSSOM),
// never through style attributes or style sheets made from strings: the page's
// Content-Security-Policy (style-src 'self') allows exactly that.

const BACKGROUNDS = new Set(["default", "transparent", "colour", "image"]);
const COLOUR = /^#(?:[0-9a-fA-F]{6}|[0-9a-fA-F]{8})$/;
// A data: URL of an image, base64 (nothing in it can end the CSS url() early).
const IMAGE_URL = /^data:image\/(?:png|jpeg|webp|gif|svg\+xml);base64,[A-Za-z0-9+/=]+$/;

const root = document.documentElement;
let captionsOn = false;
let current = null; // the phrase being spoken, or null
let box = null; // the caption's element, made on first use
let line = null;

function colour(value, fallback) {
  return typeof value === "string" && COLOUR.test(value) ? value : fallback;
}

function ensureBox() {
  if (box !== null) {
    return;
  }
  box = document.createElement("div");
  box.id = "captions";
  box.className = "captions";
  box.setAttribute("aria-live", "polite");
  box.hidden = true;
  line = document.createElement("span");
  line.className = "caption-line";
  box.append(line);
  (document.getElementById("stage") ?? document.body).append(box);
}

function render() {
  ensureBox();
  line.textContent = current ?? "";
  box.hidden = !(captionsOn && current !== null);
}

export function applyLook(command) {
  const kind = BACKGROUNDS.has(command.background) ? command.background : "default";
  const image = typeof command.background_image === "string" ? command.background_image : "";
  const useImage = kind === "image" && IMAGE_URL.test(image);
  root.dataset.background = kind === "image" && !useImage ? "default" : kind;
  root.style.setProperty("--look-bg-colour", colour(command.background_colour, "#00b140"));
  root.style.setProperty("--look-bg-image", useImage ? `url("${image}")` : "none");
  root.classList.toggle("audience", command.audience === true);

  captionsOn = command.captions === true;
  const size = Number(command.caption_size_pct);
  const pct = Number.isFinite(size) ? Math.min(15, Math.max(2, size)) : 4.5;
  root.style.setProperty("--caption-size", `${pct}vh`);
  root.dataset.captionPosition = command.caption_position === "top" ? "top" : "bottom";
  root.style.setProperty("--caption-colour", colour(command.caption_colour, "#ffffff"));
  root.style.setProperty("--caption-background", colour(command.caption_background, "#000000b3"));
  render();
}

export function showCaption(text) {
  current = typeof text === "string" && text.trim() ? text : null;
  render();
}

export const lookHandlers = {
  look: async (command) => applyLook(command),
  caption: async (command) => showCaption(command.text),
};
