// The HTML 404 page: the header, and which address had nothing.

import { renderNav } from "./nav.js";

await renderNav();
const match = location.pathname.match(/^\/watch\/([^/]+)\/?$/);
if (match) {
  document.getElementById("not-found-text").textContent =
    `There is no channel called “${decodeURIComponent(match[1])}”. Check the name, or find it in the directory.`;
}
document.body.dataset.ready = "true";
