// Script of the lab kit's sample site: proves that text/javascript is served and runs.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const status = document.getElementById("script-status");
  if (status) {
    status.textContent = "app.js ran: the server sent it as " +
      "text/javascript and your browser executed it.";
  }
});
