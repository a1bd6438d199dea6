/*! cometbox.js: the browser client for cometbox mailboxes. MIT licence.
 *
 * One source, two forms: loaded with <script src="/cometbox.js"> it defines
 * the global `cometbox`; the gateway also serves it at /cometbox.mjs with
 * `export default cometbox` appended, for `import cometbox from ...`.
 * docs/client.md is the manual; docs/protocol.md the wire format it speaks.
 */
var cometbox = (function () {
  "use strict";

  var TRANSPORTS = ["auto", "sse", "longpoll", "websocket", "jsonp"];
  var jsonpSeq = 0;

  // `id` is "{store}.{generation}-{seq}": ids of one incarnation of a mailbox
  // sort as strings, so a repeat is one that does not sort after the cursor.
  function seen(cursor, id) {
    var e = cursor && cursor.lastIndexOf("-");
    return e > 0 && id.slice(0, e + 1) == cursor.slice(0, e + 1) && id.length == cursor.length && id <= cursor;
  }

  function decodeBase64(text) {
    var bin = atob(text), bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return bytes;
  }

  // `path` is a URL path ("/mailbox/alice"), or a list of mailbox names
  // followed on one connection (["user:alice", "room:42"]): messages then
  // name their mailbox and the cursor is one position per mailbox, joined.
  function subscribe(path, options) {
    var o = options || {};
    var names = Array.isArray(path) ? path : null;
    if (names) path = (o.prefix || "/mailbox/") + names.map(encodeURIComponent).join(",");
    var want = o.transport || "auto";
    if (TRANSPORTS.indexOf(want) < 0) throw new Error("cometbox: unknown transport " + want);
    var base = new URL(o.baseUrl || "", location.href);
    var crossOrigin = base.origin != location.origin;
    var cursor = null, cursors = {};
    // A composite cursor: each mailbox's position, "" where none is known.
    function setCursor(c) {
      cursor = c || null;
      if (names && c) c.split(",").forEach(function (p, i) { if (p) cursors[names[i]] = p; });
    }
    setCursor(o.since);
    var closed = false, attempt = 0, timer = null, current = null, useJsonp = false, state;

    var sub = {
      get cursor() { return cursor; },
      transport: null,
      close: function () {
        if (closed) return;
        closed = true;
        clearTimeout(timer);
        removeEventListener("online", online);
        if (current) current();
        status("closed");
      }
    };

    function status(s) {
      if (s != state && o.onStatus) o.onStatus(s, sub.transport);
      state = s;
    }
    function fail(err) { if (o.onError) o.onError(err); }

    // Delivers one message object of the wire format; true if it was new.
    function deliver(m) {
      if (m.missed) { if (o.onMissed) o.onMissed(m.mailbox); return; }
      if (seen(names ? cursors[m.mailbox] : cursor, m.id)) return;
      if (names) {
        cursors[m.mailbox] = m.id;
        cursor = names.map(function (n) { return cursors[n] || ""; }).join(",");
      } else cursor = m.id;
      var data = m.encoding == "base64" ? decodeBase64(m.data) : m.data;
      if (o.json && typeof data == "string") data = JSON.parse(data);
      if (o.onMessage) o.onMessage(data, m.id, m.mailbox);
    }

    function url(transport, token, extra) {
      var u = new URL(path, base);
      var q = Object.assign({}, o.params, extra);
      if (transport == "sse") q.transport = "sse";
      if (cursor) q.since = cursor;
      if (token) q.token = token; // EventSource, WebSocket and <script> cannot send headers
      for (var k in q) u.searchParams.set(k, q[k]);
      if (transport == "websocket") u.protocol = u.protocol == "https:" ? "wss:" : "ws:";
      return u.href;
    }

    // What a connection calls when it ends: `healthy` if it had opened, so
    // a planned end (stream-max-duration, token expiry) reconnects at once.
    function ended(healthy, err) {
      current = null;
      if (closed) return;
      if (err) fail(err);
      if (err && err.fatal) return sub.close();
      if (healthy) attempt = 0;
      // Exponential backoff with full jitter, capped; 0 after a healthy run.
      var max = o.maxDelay || 30000;
      var delay = attempt ? Math.random() * Math.min(max, 500 * Math.pow(2, attempt)) : 0;
      attempt++;
      if (delay) status("waiting");
      timer = setTimeout(connect, delay);
    }

    function online() {
      if (!current && !closed) { clearTimeout(timer); attempt = 0; connect(); }
    }

    function pick() {
      if (want != "auto") return want;
      if (useJsonp) return "jsonp";
      return typeof EventSource == "function" ? "sse" : "longpoll";
    }

    function connect() {
      if (closed) return;
      // A healthy reconnect (the next long-poll, a planned stream end) stays "open".
      if (state != "open" || attempt) status("connecting");
      Promise.resolve(typeof o.token == "function" ? o.token() : o.token).then(function (token) {
        if (closed) return;
        var transport = sub.transport = pick();
        ({ sse: sse, longpoll: longpoll, websocket: websocket, jsonp: jsonp })[transport](token);
      }, function (err) { ended(false, err); });
    }

    function sse(token) {
      var opened = false;
      var es = new EventSource(url("sse", token), { withCredentials: !!o.withCredentials });
      current = function () { es.close(); };
      es.onopen = function () { opened = true; attempt = 0; status("open"); };
      // Several mailboxes: the data is the named JSON object, the id the
      // composite cursor.
      es.onmessage = function (e) {
        if (!names) return deliver({ id: e.lastEventId, data: e.data });
        deliver(JSON.parse(e.data));
        setCursor(e.lastEventId);
      };
      es.addEventListener("base64", function (e) { deliver({ id: e.lastEventId, data: e.data, encoding: "base64" }); });
      es.addEventListener("missed", function (e) { deliver(names ? JSON.parse(e.data) : { missed: true }); });
      // EventSource would reconnect on its own with Last-Event-ID; the
      // client reconnects itself instead, to refresh the token and back off.
      es.onerror = function () {
        es.close();
        // Never opened across origins: no CORS there, so fall back to JSONP.
        if (!opened && crossOrigin && want == "auto" && !useJsonp) {
          useJsonp = true;
          return ended(true);
        }
        ended(opened, opened ? null : { transport: "sse", message: "connection failed" });
      };
    }

    function websocket(token) {
      var opened = false;
      var ws = new WebSocket(url("websocket", token));
      current = function () { ws.onclose = null; ws.close(1000); };
      ws.onopen = function () { opened = true; attempt = 0; status("open"); };
      ws.onmessage = function (e) { deliver(JSON.parse(e.data)); };
      ws.onclose = function (e) {
        ended(opened, opened ? null : { transport: "websocket", code: e.code, message: "connection failed" });
      };
    }

    // One long-poll answer: {messages, cursor, missed?}; `missed` lists the
    // mailboxes on a multiplexed poll.
    function answer(body) {
      [].concat(body.missed || []).forEach(function (n) { deliver({ missed: true, mailbox: n === true ? undefined : n }); });
      body.messages.forEach(deliver);
      if (names) setCursor(body.cursor);
      else if (!cursor) cursor = body.cursor || null;
      attempt = 0;
    }

    // A held long-poll has no "open" moment: call it open once a request has
    // been waiting half a second without failing.
    function held() {
      var t = setTimeout(function () { status("open"); }, 500);
      return function () { clearTimeout(t); };
    }

    function longpoll(token) {
      var abort = new AbortController(), settle = held();
      current = function () { settle(); abort.abort(); };
      fetch(url("longpoll", token), {
        signal: abort.signal,
        credentials: o.withCredentials ? "include" : "same-origin"
      }).then(function (res) {
        settle();
        return res.json().then(function (body) {
          if (!res.ok) throw { transport: "longpoll", status: res.status, message: body.error, fatal: res.status == 400 || res.status == 404 };
          status("open");
          answer(body);
          ended(true);
        });
      }).catch(function (err) {
        settle();
        if (closed) return;
        // A TypeError across origins is a CORS refusal (or no network): JSONP.
        if (crossOrigin && want == "auto" && err instanceof TypeError && !useJsonp) {
          useJsonp = true;
          return ended(true);
        }
        ended(false, err.transport ? err : { transport: "longpoll", message: String(err) });
      });
    }

    function jsonp(token) {
      var name = "__cometbox" + ++jsonpSeq;
      var script = document.createElement("script");
      var guard = setTimeout(function () { done({ transport: "jsonp", message: "timed out" }); }, (o.pollTimeout || 30) * 1000 + 15000);
      var settle = held();
      function done(err) {
        settle();
        clearTimeout(guard);
        delete window[name];
        script.remove();
        if (err !== false) ended(!err, err);
      }
      current = function () { done(false); };
      window[name] = function (body) { status("open"); answer(body); done(null); };
      script.onerror = function () { done({ transport: "jsonp", message: "request failed" }); };
      script.src = url("jsonp", token, { callback: name });
      document.head.appendChild(script);
    }

    addEventListener("online", online);
    connect();
    return sub;
  }

  return { subscribe: subscribe, version: "1" };
})();
export default cometbox;
export const subscribe = cometbox.subscribe;
