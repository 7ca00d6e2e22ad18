// beredskab: live updates for the on-call pages and the status page.
// Progressive enhancement only: every page works without this script.
// On-call pages (body data-live="events") listen to /web/events and fetch
// themselves again when the version differs from the one they show; the
// status page (data-live="poll") fetches itself every 30 s. Only the parts
// marked data-live are swapped, and never one the user is typing in.
(function () {
  'use strict';
  var body = document.body;
  var mode = body.getAttribute('data-live');
  if (!mode || !window.fetch || !window.DOMParser) {
    return;
  }
  var busy = false;
  var again = false;

  function typingIn(el) {
    var a = document.activeElement;
    if (a && a !== body && el.contains(a)) {
      return true;
    }
    var fields = el.querySelectorAll('input[type=text], textarea');
    for (var i = 0; i < fields.length; i++) {
      if (fields[i].value !== fields[i].defaultValue) {
        return true;
      }
    }
    return false;
  }

  function swap(html) {
    var doc = new DOMParser().parseFromString(html, 'text/html');
    var fresh = doc.querySelectorAll('[data-live][id]');
    if (!fresh.length) {
      return;
    }
    fresh.forEach(function (el) {
      var old = document.getElementById(el.id);
      if (old && !typingIn(old)) {
        old.replaceWith(document.importNode(el, true));
      }
    });
    var v = doc.body.getAttribute('data-version');
    if (v) {
      body.setAttribute('data-version', v);
    }
  }

  function refresh() {
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    fetch(location.href, { credentials: 'same-origin', cache: 'no-store' })
      .then(function (r) {
        if (r.redirected || !r.ok) {
          // Logged out or gone: let the server say so.
          location.reload();
          return null;
        }
        return r.text();
      })
      .then(function (html) {
        if (html) {
          swap(html);
        }
      })
      .catch(function () {})
      .then(function () {
        busy = false;
        if (again) {
          again = false;
          refresh();
        }
      });
  }

  if (mode === 'poll') {
    setInterval(function () {
      if (!document.hidden) {
        refresh();
      }
    }, 30000);
    return;
  }

  // Server-sent events, closed while the tab is hidden.
  var source = null;
  var retry = null;
  function open() {
    if (source || document.hidden || !window.EventSource) {
      return;
    }
    source = new EventSource('/web/events');
    source.addEventListener('version', function (e) {
      if (e.data !== body.getAttribute('data-version')) {
        refresh();
      }
    });
    source.onerror = function () {
      if (source && source.readyState === EventSource.CLOSED) {
        source = null;
        clearTimeout(retry);
        retry = setTimeout(open, 15000);
      }
    };
  }
  function close() {
    if (source) {
      source.close();
      source = null;
    }
  }
  document.addEventListener('visibilitychange', function () {
    if (document.hidden) {
      close();
    } else {
      open();
    }
  });
  // Without event streams, a light poll.
  if (!window.EventSource) {
    setInterval(function () {
      if (!document.hidden) {
        refresh();
      }
    }, 20000);
  }
  open();
})();
