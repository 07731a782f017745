// The attract screen: what a kiosk shows while it waits for someone (no session live, so it
// burns no quota), over the whole stage: an image and a line of text, both from the app's
// settings. The image arrives as a data: URL (the page reads no files). The app decides when
// it shows and when it goes (a touch, a key, a line to say, the opening hours).

export function createAttract(stage) {
  const screen = document.createElement("div");
  screen.className = "attract";
  screen.hidden = true;
  const image = document.createElement("img");
  image.className = "attract-image";
  image.alt = "";
  image.hidden = true;
  const text = document.createElement("p");
  text.className = "attract-text";
  screen.append(image, text);
  stage.append(screen);

  function show(command) {
    if (!command.show) {
      screen.hidden = true;
      image.hidden = true;
      image.removeAttribute("src");
      return { shown: false };
    }
    text.textContent = typeof command.text === "string" ? command.text : "";
    const source = typeof command.image === "string" ? command.image : "";
    if (source.startsWith("data:image/")) {
      image.src = source;
      image.hidden = false;
    } else {
      image.hidden = true;
      image.removeAttribute("src");
    }
    screen.hidden = false;
    return { shown: true };
  }

  return { show };
}
