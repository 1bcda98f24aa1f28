// Live updates: re-fetch the page's live block (?fragment=1) every few seconds and
// swap it in. Paused while the tab is hidden; a lost session goes back to the login.
(function () {
  "use strict";

  function fragmentUrl() {
    var url = new URL(window.location.href);
    url.searchParams.set("fragment", "1");
    return url.toString();
  }

  function start(live) {
    var every = parseInt(live.getAttribute("data-poll"), 10);
    if (!(every > 0)) {
      return;
    }
    var timer = null;
    var busy = false;

    function refresh() {
      if (busy || document.visibilityState !== "visible") {
        return;
      }
      busy = true;
      fetch(fragmentUrl(), { credentials: "same-origin", cache: "no-store" })
        .then(function (response) {
          if (response.status === 401) {
            window.location.assign(
              "/dashboard/login?next=" +
                encodeURIComponent(window.location.pathname + window.location.search)
            );
            return null;
          }
          return response.ok ? response.text() : null;
        })
        .then(function (html) {
          if (html !== null && html !== undefined) {
            live.innerHTML = html;
            live.setAttribute("data-refreshed", new Date().toISOString());
          }
        })
        .catch(function () {
          // The gateway restarts or the network blips: the next tick tries again.
        })
        .then(function () {
          busy = false;
        });
    }

    function schedule() {
      if (timer === null) {
        timer = window.setInterval(refresh, every);
      }
    }

    document.addEventListener("visibilitychange", function () {
      if (document.visibilityState === "visible") {
        refresh();
        schedule();
      } else if (timer !== null) {
        window.clearInterval(timer);
        timer = null;
      }
    });
    schedule();
  }

  function confirmCancel(event) {
    var button = event.target.closest("button.danger");
    if (button && !window.confirm("Cancel this job? Its remaining items will not run.")) {
      event.preventDefault();
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    var live = document.getElementById("live");
    if (live) {
      start(live);
    }
    document.addEventListener("submit", confirmCancel, true);
  });
})();
