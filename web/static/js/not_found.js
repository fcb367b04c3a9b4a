// The HTML 404 page: the header, and which address had nothing.

import { renderNav } from "./nav.js";

await renderNav();
const match = location.pathname.match(/^\/watch\/([^/]+)\/?$/);
let asked = null;
try {
  asked = match ? decodeURIComponent(match[1]) : null;
} catch {
  asked = null; // not even a well-formed name
}
if (asked) {
  document.getElementById("not-found-text").textContent =
    `There is no channel called “${asked}”. Check the name, or find it in the directory.`;
}
document.body.dataset.ready = "true";
