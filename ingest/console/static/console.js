// ams console: live updates (Server-Sent Events) and the command form's
// checks before sending. No inline script: the page's CSP allows only this file.
(function () {
  'use strict';

  function when(t) {
    if (!t || t.indexOf('0001-') === 0) { return '\u2014'; }
    return t.slice(0, 10) + ' ' + t.slice(11, 19) + 'Z';
  }
  function set(root, name, text) {
    var el = root.querySelector('[data-live="' + name + '"]');
    if (el) { el.textContent = String(text); }
  }
  function pill(el, online) {
    el.textContent = online ? 'online' : 'offline';
    el.className = 'pill ' + (online ? 'online' : 'offline');
  }

  document.querySelectorAll('[data-sse]').forEach(function (root) {
    var es = new EventSource(root.getAttribute('data-sse'));
    root.setAttribute('data-sse-state', 'connecting');
    es.addEventListener('open', function () { root.setAttribute('data-sse-state', 'open'); });
    es.addEventListener('counts', function (e) {
      var d = JSON.parse(e.data);
      set(root, 'online', d.online);
      set(root, 'offline', d.offline);
    });
    es.addEventListener('presence', function (e) {
      var d = JSON.parse(e.data);
      var p = root.querySelector('[data-live="presence"]');
      if (p) { pill(p, d.online); }
      set(root, 'since', when(d.since));
      set(root, 'last_seen', when(d.last_seen));
      set(root, 'session', d.session ? 'established' : 'none');
    });
    es.addEventListener('command', function (e) {
      var d = JSON.parse(e.data);
      set(root, 'state', d.state);
      var sn = document.getElementById('cmd-sn');
      if (sn && d.sn && !sn.querySelector('a')) {
        var a = document.createElement('a');
        a.href = '/ui/cameras/' + encodeURIComponent(d.sn);
        a.textContent = d.sn;
        sn.textContent = '';
        sn.appendChild(a);
      }
      var kind = document.getElementById('cmd-kind');
      if (kind) { kind.textContent = d.kind || ''; }
      var reply = document.getElementById('cmd-reply');
      if (reply && d.reply !== undefined) { reply.textContent = JSON.stringify(d.reply); }
      var ol = document.getElementById('cmd-history');
      if (ol && d.history) {
        while (ol.firstChild) { ol.removeChild(ol.firstChild); }
        d.history.forEach(function (h) {
          var li = document.createElement('li');
          li.textContent = when(h.at) + ' ' + h.state + (h.reason ? ' (' + h.reason + ')' : '');
          ol.appendChild(li);
        });
      }
      if (d.final) { es.close(); root.setAttribute('data-sse-state', 'done'); }
    });
  });

  // The command form: integers are checked here first, so a bad value is
  // named before anything is sent; the server checks everything again.
  var form = document.getElementById('cmdform');
  if (form) {
    form.addEventListener('submit', function (ev) {
      var problems = [];
      form.querySelectorAll('[data-type="int"]').forEach(function (input) {
        var err = document.getElementById(input.id + '-err');
        var field = err ? err.getAttribute('data-field') : input.name;
        var v = input.value.trim();
        var msg = '';
        if (v === '') {
          if (input.getAttribute('data-required')) { msg = 'is required'; }
        } else if (!/^-?[0-9]+$/.test(v)) {
          msg = 'must be an integer';
        } else if (input.getAttribute('data-min') !== null && Number(v) < Number(input.getAttribute('data-min'))) {
          msg = 'must be at least ' + input.getAttribute('data-min');
        }
        if (err) { err.textContent = msg ? field + ': ' + msg : ''; }
        if (msg) {
          input.setAttribute('aria-invalid', 'true');
          input.setAttribute('aria-describedby', input.id + '-err');
          problems.push({ input: input, text: field + ': ' + msg });
        } else {
          input.removeAttribute('aria-invalid');
        }
      });
      var box = document.getElementById('client-errors');
      if (problems.length > 0) {
        ev.preventDefault();
        if (box) {
          box.textContent = 'Not sent. ' + problems.map(function (p) { return p.text; }).join('; ');
          box.hidden = false;
        }
        problems[0].input.focus();
      } else if (box) {
        box.hidden = true;
      }
    });
  }
})();
