// tripline trip explorer: a page over the query API. It holds no privileges of its own: the API
// key entered by the user is kept in this tab's sessionStorage and sent as the Bearer header.
// No framework and no build step; the map is drawn as SVG (Web Mercator), optionally over raster
// tiles when the deployment configures `[ui] tile_url`.

const KEY_STORE = "tripline.api_key";
const EVENT_KINDS = ["harsh_braking", "harsh_acceleration", "harsh_cornering", "speeding"];
const EVENT_LABELS = {
  harsh_braking: "harsh braking",
  harsh_acceleration: "harsh acceleration",
  harsh_cornering: "harsh cornering",
  speeding: "speeding",
};
const EVENT_COLOURS = {
  harsh_braking: "#a4161a",
  harsh_acceleration: "#7b2cbf",
  harsh_cornering: "#b35c00",
  speeding: "#1d3557",
};
// Speed bands of the track, km/h, with colours distinguishable in print and by most colour-blind
// readers (a sequential ramp, light to dark).
const SPEED_BANDS = [
  { below: 30, colour: "#9ecae1", label: "under 30 km/h" },
  { below: 60, colour: "#4292c6", label: "30–60 km/h" },
  { below: 90, colour: "#2171b5", label: "60–90 km/h" },
  { below: 120, colour: "#08519c", label: "90–120 km/h" },
  { below: Infinity, colour: "#08306b", label: "120 km/h and over" },
];
const MAP_POINTS_MAX = 20000;
const PAGE_SIZE = 50;

const main = document.getElementById("main");
const notice = document.getElementById("notice");
const statusLine = document.getElementById("status");
let config = { tile_url: null, tile_attribution: null };
// The deployment's regions: `{ name, rings: [[[lon, lat], …], …], bbox: [minLon, minLat, maxLon, maxLat] }`.
let regions = [];
// The view being shown: its cleanup (a live stream to close) runs when another replaces it.
let current = { cleanup: () => {} };

// ---------------------------------------------------------------------------------------------
// Small helpers

/** An element with attributes and children (strings become text: never HTML). */
function h(tag, attrs = {}, ...children) {
  const svg = ["svg", "g", "path", "polyline", "line", "rect", "circle", "text", "title", "image"].includes(tag);
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") el.addEventListener(name.slice(2), value);
    else if (name === "text") el.textContent = value;
    else if (name === "style") {
      // Property by property: the page's policy allows no inline style attribute.
      for (const rule of String(value).split(";").filter(Boolean)) {
        const [property, ...rest] = rule.split(":");
        el.style.setProperty(property.trim(), rest.join(":").trim());
      }
    }
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function say(text) {
  statusLine.textContent = text;
}

function warn(text) {
  notice.textContent = text;
  notice.hidden = !text;
}

function plural(n, noun) {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}

function fmt(value, digits = 1) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.round(seconds);
  const hours = Math.floor(s / 3600);
  const minutes = Math.floor((s % 3600) / 60);
  return hours ? `${hours} h ${minutes} min` : minutes ? `${minutes} min ${s % 60} s` : `${s} s`;
}

function browserZone() {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
}

function validZone(zone) {
  try {
    new Intl.DateTimeFormat("en", { timeZone: zone });
    return true;
  } catch {
    return false;
  }
}

/** The time zone a view's URL names, else the browser's. */
function zoneOf(params) {
  return validZone(params.get("tz") || "") ? params.get("tz") : browserZone();
}

/** Whether `zone` (entered in a form) is a zone this browser knows; says so when it is not. */
function knownZone(zone) {
  if (validZone(zone)) return true;
  warn(`"${zone}" is not a time zone this browser knows (use an IANA name such as Europe/Berlin).`);
  return false;
}

/** An RFC 3339 time shown in `zone`. */
function localTime(rfc3339, zone) {
  if (!rfc3339) return "–";
  const date = new Date(rfc3339);
  return new Intl.DateTimeFormat("en-GB", {
    timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
  }).format(date);
}

/** Milliseconds `zone` is ahead of UTC at instant `ms`. */
function zoneOffsetMs(ms, zone) {
  const parts = Object.fromEntries(
    new Intl.DateTimeFormat("en-US", {
      timeZone: zone, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit",
    }).formatToParts(new Date(ms)).map((p) => [p.type, p.value]),
  );
  const asUtc = Date.UTC(+parts.year, +parts.month - 1, +parts.day, +parts.hour, +parts.minute, +parts.second);
  return asUtc - Math.floor(ms / 1000) * 1000;
}

/** A wall time (`YYYY-MM-DDTHH:MM` of a datetime-local input) in `zone`, as RFC 3339 UTC. */
function wallToUtc(wall, zone) {
  if (!wall) return "";
  const [date, time] = wall.split("T");
  const [y, m, d] = date.split("-").map(Number);
  const [hh, mm] = (time || "00:00").split(":").map(Number);
  const naive = Date.UTC(y, m - 1, d, hh, mm);
  let guess = naive - zoneOffsetMs(naive, zone);
  guess = naive - zoneOffsetMs(guess, zone);
  return new Date(guess).toISOString();
}

/** RFC 3339 UTC as a wall time in `zone` for a datetime-local input. */
function utcToWall(rfc3339, zone) {
  if (!rfc3339) return "";
  const ms = Date.parse(rfc3339);
  if (Number.isNaN(ms)) return "";
  return new Date(ms + zoneOffsetMs(ms, zone)).toISOString().slice(0, 16);
}

// ---------------------------------------------------------------------------------------------
// The API

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function apiKey() {
  return sessionStorage.getItem(KEY_STORE);
}

/** GET `path` with `params` (an object; arrays repeat the parameter) as the key's tenant. */
async function api(path, params = {}) {
  const key = apiKey();
  if (!key) throw new ApiError(401, "no_key", "Enter an API key to see your trips.");
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    for (const v of [].concat(value)) if (v !== "" && v !== null && v !== undefined) query.append(name, v);
  }
  const url = query.toString() ? `${path}?${query}` : path;
  let response;
  try {
    response = await fetch(url, { headers: { Authorization: `Bearer ${key}`, Accept: "application/json" } });
  } catch {
    throw new ApiError(0, "unreachable", "The API cannot be reached. Is tripline running?");
  }
  if (response.ok) return response.json();
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not the contract's error body: say what we know.
  }
  const code = body?.error?.code ?? "error";
  const message = body?.error?.message ?? `The API answered ${response.status}.`;
  throw new ApiError(response.status, code, message);
}

/** Shows what went wrong in a way a user can act on. */
function showError(error, where = main) {
  if (error.status === 401) {
    warn(error.code === "no_key"
      ? "Enter an API key to see your trips."
      : "The API key was not accepted (401). Check the key and enter it again.");
  } else if (error.status === 429) {
    warn("Too many requests (429): wait a moment and try again.");
  } else {
    warn(error.message || String(error));
  }
  where.replaceChildren(h("p", { class: "empty" }, "Nothing to show."));
}

// ---------------------------------------------------------------------------------------------
// Routing: `#trips?…` (the search in the URL), `#trip/<id>`, `#fleet?…`.

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "trips";
  const [path, query = ""] = raw.split("?");
  return { path: decodeURIComponent(path), params: new URLSearchParams(query) };
}

function go(path, params) {
  const query = params && params.toString();
  const hash = `#${path}${query ? `?${query}` : ""}`;
  if (location.hash === hash) route();
  else location.hash = hash;
}

async function route() {
  current.cleanup();
  current = { cleanup: () => {} };
  warn("");
  const { path, params } = parseHash();
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.view === path.split("/")[0]) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (!apiKey()) {
    main.replaceChildren(h("p", { class: "hint" }, "Enter your API key above to explore your fleet's trips. The key stays in this browser tab only."));
    document.getElementById("api-key").focus();
    return;
  }
  if (path.startsWith("trip/")) await tripView(path.slice(5), params);
  else if (path === "fleet") await fleetView(params);
  else await tripsView(params);
}

// ---------------------------------------------------------------------------------------------
// Trips: search form, sortable and paged table

const SEARCH_FIELDS = ["q", "vehicle_id", "status", "min_score", "max_score", "bbox"];

async function tripsView(params) {
  const zone = zoneOf(params);
  const form = searchForm(params, zone);
  const results = h("section", { "aria-labelledby": "results-title" });
  main.replaceChildren(h("h2", { id: "results-title" }, "Trips"), form, results);
  const query = {};
  for (const field of SEARCH_FIELDS) if (params.get(field)) query[field] = params.get(field);
  for (const name of ["from", "to"]) if (params.get(name)) query[name] = params.get(name);
  query.event = params.getAll("event");
  query.region = params.getAll("region");
  query.sort = params.get("sort") || "-start_time";
  query.limit = PAGE_SIZE;
  if (params.get("cursor")) query.cursor = params.get("cursor");
  say("Searching…");
  let answer;
  try {
    answer = await api("/v1/trips", query);
  } catch (error) {
    say("");
    return showError(error, results);
  }
  say(`${plural(answer.total, "trip")} found.`);
  results.replaceChildren(tripsTable(answer, params, zone));
}

function searchForm(params, zone) {
  const field = (name, label, attrs = {}) =>
    h("label", {}, label, h("input", { name, value: params.get(name) ?? "", ...attrs }));
  const events = h("fieldset", { class: "checks" }, h("legend", {}, "Has events"),
    EVENT_KINDS.map((kind) => h("label", {},
      h("input", { type: "checkbox", name: "event", value: kind, checked: params.getAll("event").includes(kind) }),
      ` ${EVENT_LABELS[kind]}`)));
  const bboxInput = h("input", { name: "bbox", value: params.get("bbox") ?? "", placeholder: "min lon, min lat, max lon, max lat", pattern: "^\\s*-?[0-9.]+\\s*,\\s*-?[0-9.]+\\s*,\\s*-?[0-9.]+\\s*,\\s*-?[0-9.]+\\s*$" });
  const bboxMap = h("div", { class: "bbox-map", hidden: true });
  const form = h("form", { id: "search", role: "search", "aria-label": "Search trips" },
    h("fieldset", {}, h("legend", {}, "Search trips"),
      h("div", { class: "form-grid" },
        field("q", "Free text", { type: "search", placeholder: "vehicle, region, event" }),
        field("vehicle_id", "Vehicle", { placeholder: "e.g. car-17" }),
        h("label", {}, "From", h("input", { type: "datetime-local", name: "from", value: utcToWall(params.get("from"), zone) })),
        h("label", {}, "To", h("input", { type: "datetime-local", name: "to", value: utcToWall(params.get("to"), zone) })),
        field("tz", "Time zone", { value: zone, list: "zones", spellcheck: "false" }),
        field("min_score", "Score from", { type: "number", min: 0, max: 100, step: "any" }),
        field("max_score", "Score to", { type: "number", min: 0, max: 100, step: "any" }),
        field("region", "Region", { value: params.getAll("region").join(", "), placeholder: "comma-separated" }),
        h("label", {}, "Status", h("select", { name: "status" },
          [["", "any"], ["active", "active"], ["completed", "completed"]].map(([value, label]) =>
            h("option", { value, selected: (params.get("status") ?? "") === value }, label)))),
        h("label", {}, "Area (bbox)", bboxInput),
      ),
      events,
      h("datalist", { id: "zones" }, [browserZone(), "UTC", "Europe/Berlin", "Europe/London", "America/New_York"]
        .map((z) => h("option", { value: z }))),
      h("div", { class: "actions" },
        h("button", { type: "submit" }, "Search"),
        h("button", { type: "button", class: "quiet", onclick: () => drawBbox(bboxMap, bboxInput) }, "Draw area on map"),
        h("button", { type: "button", class: "quiet", onclick: () => go("trips") }, "Clear")),
      bboxMap));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const tz = String(data.get("tz") || "").trim() || "UTC";
    if (!knownZone(tz)) return;
    const next = new URLSearchParams();
    for (const name of SEARCH_FIELDS) {
      const value = String(data.get(name) || "").trim();
      if (value) next.set(name, value.replace(/\s+/g, name === "bbox" ? "" : " "));
    }
    for (const name of ["from", "to"]) if (data.get(name)) next.set(name, wallToUtc(String(data.get(name)), tz));
    for (const region of String(data.get("region") || "").split(",").map((r) => r.trim()).filter(Boolean)) next.append("region", region);
    for (const kind of data.getAll("event")) next.append("event", String(kind));
    next.set("tz", tz);
    const sort = parseHash().params.get("sort");
    if (sort) next.set("sort", sort);
    go("trips", next);
  });
  return form;
}

const SORTS = { start_time: "Start", distance_km: "Distance", score: "Score" };

function tripsTable(answer, params, zone) {
  if (!answer.trips.length) return h("p", { class: "empty" }, "No trips match this search.");
  const sort = params.get("sort") || "-start_time";
  const sortHeader = (key, numeric) => {
    const active = sort.replace(/^-/, "") === key;
    const descending = sort.startsWith("-");
    const next = new URLSearchParams(params);
    next.delete("cursor");
    next.delete("back");
    next.set("sort", active && descending ? key : `-${key}`);
    return h("th", { scope: "col", class: numeric ? "num" : null, "aria-sort": active ? (descending ? "descending" : "ascending") : "none" },
      h("button", { type: "button", class: "sort", onclick: () => go("trips", next) },
        SORTS[key], active ? (descending ? " ▼" : " ▲") : ""));
  };
  const rows = answer.trips.map((trip) => {
    const events = EVENT_KINDS.reduce((sum, kind) => sum + (trip.events?.[kind] ?? 0), 0);
    const eventTitle = EVENT_KINDS.map((kind) => `${EVENT_LABELS[kind]}: ${trip.events?.[kind] ?? 0}`).join(", ");
    return h("tr", {},
      h("td", {}, h("a", { href: `#trip/${encodeURIComponent(trip.trip_id)}?tz=${encodeURIComponent(zone)}` }, localTime(trip.start_time, zone))),
      h("td", {}, trip.vehicle_id),
      h("td", { class: "num" }, `${fmt(trip.distance_km, 2)} km`),
      h("td", { class: "num" }, duration(trip.duration_s)),
      h("td", { class: "num" }, fmt(trip.score)),
      h("td", { class: "num", title: eventTitle }, String(events)),
      h("td", {}, trip.status === "active" ? h("span", { class: "badge live" }, "active") : "completed"));
  });
  const back = params.getAll("back");
  const pager = h("div", { class: "pager" },
    h("button", { type: "button", class: "quiet", disabled: !params.get("cursor"), onclick: () => {
      const prev = new URLSearchParams(params);
      const stack = prev.getAll("back");
      prev.delete("back");
      prev.delete("cursor");
      const previous = stack.pop();
      stack.forEach((c) => prev.append("back", c));
      if (previous) prev.set("cursor", previous);
      go("trips", prev);
    } }, "Previous page"),
    h("button", { type: "button", class: "quiet", disabled: !answer.next_cursor, onclick: () => {
      const next = new URLSearchParams(params);
      if (params.get("cursor")) next.append("back", params.get("cursor"));
      next.set("cursor", answer.next_cursor);
      go("trips", next);
    } }, "Next page"),
    h("span", {}, `${plural(answer.total, "trip")}${back.length || params.get("cursor") ? `, page ${back.length + 2}` : ""}`));
  return h("div", {},
    h("div", { class: "table-wrap" }, h("table", { id: "trips-table" },
      h("caption", {}, `Trips (times in ${zone})`),
      h("thead", {}, h("tr", {}, sortHeader("start_time"), h("th", { scope: "col" }, "Vehicle"), sortHeader("distance_km", true),
        h("th", { scope: "col", class: "num" }, "Duration"), sortHeader("score", true), h("th", { scope: "col", class: "num" }, "Events"),
        h("th", { scope: "col" }, "Status"))),
      h("tbody", {}, rows))),
    pager);
}

/** Lets the user drag a rectangle on a map of the search's trips' start points. */
async function drawBbox(container, input) {
  container.hidden = false;
  container.replaceChildren(h("p", { class: "hint" }, "Loading trip starts…"));
  let answer;
  try {
    answer = await api("/v1/trips", { limit: 1000, sort: "-start_time" });
  } catch (error) {
    return showError(error, container);
  }
  const starts = answer.trips.filter((t) => t.start).map((t) => [t.start.lon, t.start.lat]);
  if (!starts.length) {
    container.replaceChildren(h("p", { class: "empty" }, "No trips to draw an area around."));
    return;
  }
  const map = new MapView(boundsOf(starts, 0.2));
  map.drawTiles();
  map.drawRegions();
  for (const [lon, lat] of starts) {
    const [x, y] = map.project(lon, lat);
    map.layer.append(h("circle", { cx: x, cy: y, r: 4, fill: "#0b5cad", opacity: 0.7 }));
  }
  map.drawScale();
  const selection = h("rect", { class: "selection", width: 0, height: 0, visibility: "hidden" });
  map.svg.append(selection);
  let anchor = null;
  const at = (event) => {
    const box = map.svg.getBoundingClientRect();
    return [((event.clientX - box.left) / box.width) * map.width, ((event.clientY - box.top) / box.height) * map.height];
  };
  map.svg.addEventListener("pointerdown", (event) => {
    anchor = at(event);
    map.svg.setPointerCapture(event.pointerId);
  });
  map.svg.addEventListener("pointermove", (event) => {
    if (!anchor) return;
    const [x, y] = at(event);
    selection.setAttribute("x", Math.min(x, anchor[0]));
    selection.setAttribute("y", Math.min(y, anchor[1]));
    selection.setAttribute("width", Math.abs(x - anchor[0]));
    selection.setAttribute("height", Math.abs(y - anchor[1]));
    selection.setAttribute("visibility", "visible");
  });
  map.svg.addEventListener("pointerup", (event) => {
    if (!anchor) return;
    const [x, y] = at(event);
    const [lon1, lat1] = map.unproject(Math.min(x, anchor[0]), Math.max(y, anchor[1]));
    const [lon2, lat2] = map.unproject(Math.max(x, anchor[0]), Math.min(y, anchor[1]));
    anchor = null;
    input.value = [lon1, lat1, lon2, lat2].map((v) => v.toFixed(5)).join(",");
    say("Area set: press Search to find the trips that passed through it.");
  });
  container.replaceChildren(
    h("p", { class: "hint", id: "bbox-help" }, "Drag a rectangle over the map to set the area; or type it in the Area field."),
    map.svg);
  map.svg.setAttribute("aria-describedby", "bbox-help");
}

// ---------------------------------------------------------------------------------------------
// The map: Web Mercator on an SVG, fitted to bounds.

function boundsOf(lonLats, marginShare = 0.08) {
  let [minLon, minLat, maxLon, maxLat] = [Infinity, Infinity, -Infinity, -Infinity];
  for (const [lon, lat] of lonLats) {
    minLon = Math.min(minLon, lon);
    maxLon = Math.max(maxLon, lon);
    minLat = Math.min(minLat, lat);
    maxLat = Math.max(maxLat, lat);
  }
  const padLon = Math.max((maxLon - minLon) * marginShare, 0.002);
  const padLat = Math.max((maxLat - minLat) * marginShare, 0.002);
  return [minLon - padLon, Math.max(minLat - padLat, -85), maxLon + padLon, Math.min(maxLat + padLat, 85)];
}

function mercator(lon, lat) {
  const phi = (Math.max(Math.min(lat, 85.05), -85.05) * Math.PI) / 180;
  return [(lon + 180) / 360, (1 - Math.log(Math.tan(phi) + 1 / Math.cos(phi)) / Math.PI) / 2];
}

function inverseMercator(x, y) {
  const lon = x * 360 - 180;
  const lat = (Math.atan(Math.sinh(Math.PI * (1 - 2 * y))) * 180) / Math.PI;
  return [lon, lat];
}

class MapView {
  constructor([minLon, minLat, maxLon, maxLat], width = 800, height = 600) {
    this.width = width;
    this.height = height;
    const [x0, y1] = mercator(minLon, minLat);
    const [x1, y0] = mercator(maxLon, maxLat);
    // World units per pixel, the same on both axes.
    this.scale = Math.max((x1 - x0) / width, (y1 - y0) / height);
    this.originX = (x0 + x1) / 2 - (width / 2) * this.scale;
    this.originY = (y0 + y1) / 2 - (height / 2) * this.scale;
    this.svg = h("svg", { class: "map", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "Map" });
    this.tiles = h("g", { class: "tiles" });
    this.layer = h("g", {});
    this.svg.append(this.tiles, this.layer);
  }

  project(lon, lat) {
    const [x, y] = mercator(lon, lat);
    return [(x - this.originX) / this.scale, (y - this.originY) / this.scale];
  }

  unproject(px, py) {
    return inverseMercator(this.originX + px * this.scale, this.originY + py * this.scale);
  }

  /** Metres per pixel at the map's centre. */
  metresPerPixel() {
    const [, lat] = this.unproject(this.width / 2, this.height / 2);
    return this.scale * 40075016.686 * Math.cos((lat * Math.PI) / 180);
  }

  drawScale() {
    const perPixel = this.metresPerPixel();
    const target = perPixel * this.width * 0.2;
    const magnitude = 10 ** Math.floor(Math.log10(target));
    const metres = [5, 2, 1].map((m) => m * magnitude).find((m) => m <= target) ?? magnitude;
    const length = metres / perPixel;
    const label = metres >= 1000 ? `${metres / 1000} km` : `${metres} m`;
    const x = 16;
    const y = this.height - 16;
    this.svg.append(h("g", { class: "scale", "aria-hidden": "true" },
      h("rect", { x: x - 6, y: y - 22, width: length + 12, height: 30, fill: "#ffffff", opacity: 0.8 }),
      h("line", { x1: x, y1: y, x2: x + length, y2: y }),
      h("line", { x1: x, y1: y - 5, x2: x, y2: y + 2 }),
      h("line", { x1: x + length, y1: y - 5, x2: x + length, y2: y + 2 }),
      h("text", { x, y: y - 8 }, label)));
    this.svg.dataset.metresPerPixel = perPixel.toFixed(3);
  }

  /** The outlines of the regions on the map, named. */
  drawRegions() {
    const [west, north] = this.unproject(0, 0);
    const [east, south] = this.unproject(this.width, this.height);
    const group = h("g", { class: "regions", "aria-hidden": "true" });
    for (const region of regions) {
      const [minLon, minLat, maxLon, maxLat] = region.bbox;
      if (maxLon < west || minLon > east || maxLat < south || minLat > north) continue;
      const d = region.rings.map((ring) => `M${ring.map(([lon, lat]) => this.project(lon, lat).map((v) => v.toFixed(1)).join(",")).join("L")}Z`).join("");
      const [x, y] = this.project((minLon + maxLon) / 2, maxLat);
      group.append(h("path", { class: "region", d }),
        h("text", { class: "region-name", x: Math.min(Math.max(x, 40), this.width - 40), y: Math.max(y + 16, 16), "text-anchor": "middle" }, region.name));
    }
    this.tiles.after(group);
  }

  /** Raster tiles under the drawing, when the deployment names a tile server. */
  drawTiles() {
    if (!config.tile_url) return;
    const zoom = Math.max(0, Math.min(19, Math.round(Math.log2(1 / (256 * this.scale)))));
    const tiles = 2 ** zoom;
    const [x0, y0] = [Math.floor(this.originX * tiles), Math.floor(this.originY * tiles)];
    const [x1, y1] = [Math.floor((this.originX + this.width * this.scale) * tiles), Math.floor((this.originY + this.height * this.scale) * tiles)];
    const size = 1 / tiles / this.scale;
    for (let tx = x0; tx <= x1; tx += 1) {
      for (let ty = Math.max(0, y0); ty <= Math.min(tiles - 1, y1); ty += 1) {
        const wrapped = ((tx % tiles) + tiles) % tiles;
        const href = config.tile_url.replace("{z}", zoom).replace("{x}", wrapped).replace("{y}", ty);
        this.tiles.append(h("image", {
          href, x: (tx / tiles - this.originX) / this.scale, y: (ty / tiles - this.originY) / this.scale,
          width: size + 0.5, height: size + 0.5, preserveAspectRatio: "none",
        }));
      }
    }
    if (config.tile_attribution) {
      this.svg.append(h("text", { x: this.width - 6, y: this.height - 6, "text-anchor": "end" }, config.tile_attribution));
    }
  }
}

function bandOf(speedKmh) {
  return SPEED_BANDS.findIndex((band) => speedKmh < band.below);
}

/** The track as polylines, one per run of points in the same speed band. */
function drawTrack(map, points) {
  let run = null;
  const flush = () => {
    if (run && run.coords.length > 1) {
      map.layer.append(h("polyline", { class: "track", stroke: SPEED_BANDS[run.band].colour, points: run.coords.join(" ") }));
    }
  };
  for (const p of points) {
    const [x, y] = map.project(p.lon, p.lat);
    const coord = `${x.toFixed(1)},${y.toFixed(1)}`;
    const band = bandOf(p.speed_kmh ?? 0);
    if (!run || run.band !== band) {
      const last = run?.coords.at(-1);
      flush();
      run = { band, coords: last ? [last] : [] };
    }
    run.coords.push(coord);
  }
  flush();
}

// ---------------------------------------------------------------------------------------------
// One trip: map, figures, events, points table; live while it is active

async function tripView(tripId, params) {
  const zone = zoneOf(params);
  main.replaceChildren(h("p", { class: "hint" }, "Loading the trip…"));
  say("Loading the trip…");
  let trip;
  try {
    trip = await api(`/v1/trips/${encodeURIComponent(tripId)}`);
  } catch (error) {
    say("");
    if (error.status === 404) {
      main.replaceChildren(h("h2", {}, "Trip not found"),
        h("p", { id: "not-found" }, `There is no trip "${tripId}" for this API key.`),
        h("p", {}, h("a", { href: "#trips" }, "Back to the trips")));
      return;
    }
    return showError(error);
  }
  let read;
  let rejected;
  try {
    [read, rejected] = await Promise.all([readPoints(tripId), rejectedPointsOf(trip)]);
  } catch (error) {
    return showError(error);
  }
  say("");
  const mapBox = h("div", { id: "trip-map" });
  const figures = h("div", { id: "trip-figures" });
  const detail = h("div", { class: "event-detail", id: "event-detail", hidden: true, tabindex: "-1" });
  const table = h("section", { id: "points", "aria-label": "Points" });
  main.replaceChildren(
    h("p", {}, h("a", { href: "#trips" }, "← Trips")),
    h("h2", { id: "trip-title" }, `Trip ${trip.trip_id}`),
    h("div", { class: "trip-layout" }, h("div", {}, mapBox, legend()), h("div", {}, figures, detail)),
    table);
  const render = () => {
    figures.replaceChildren(tripFigures(trip, zone));
    mapBox.replaceChildren(tripMap(trip, read.points, rejected, zone, detail));
  };
  render();
  await pointsTable(table, tripId, zone, null, []);
  if (trip.status !== "active") return;
  const view = current;
  const stop = follow(trip, async () => {
    try {
      trip = await api(`/v1/trips/${encodeURIComponent(tripId)}`);
      // Once completed, the whole trip once more (a late point may have landed anywhere).
      read = await readPoints(tripId, trip.status === "active" ? read : null);
      render();
      if (trip.status === "active") {
        say(`Updated ${new Date().toLocaleTimeString()}.`);
      } else {
        // Nothing more will come: the stream is closed.
        stop();
        view.cleanup = () => {};
        say(`The trip was completed at ${new Date().toLocaleTimeString()}.`);
      }
    } catch (error) {
      showError(error);
    }
  });
  view.cleanup = stop;
}

/**
 * The trip's points for its map (at most MAP_POINTS_MAX), a page at a time. With `earlier` (what
 * an earlier call returned) the pages before its last one are kept and the reading goes on from
 * that page, so a live trip's update reads what is new rather than the whole trip again.
 */
async function readPoints(tripId, earlier = null) {
  const points = earlier ? earlier.points.slice(0, earlier.kept) : [];
  let cursor = earlier ? earlier.cursor : null;
  let last;
  do {
    last = { cursor, kept: points.length };
    const page = await api(`/v1/trips/${encodeURIComponent(tripId)}/points`, { limit: 1000, cursor });
    points.push(...page.points);
    cursor = page.next_cursor;
  } while (cursor && points.length < MAP_POINTS_MAX);
  return { points, cursor: last.cursor, kept: last.kept };
}

/**
 * The trip's rejected points that can be placed: the tenant's rejections (newest first) of the
 * trip's vehicle, for one point, received since the trip started, whose payload names a
 * position within the trip's time. Looks through the most recent rejections only.
 */
async function rejectedPointsOf(trip) {
  if (!trip.rejected_point_count) return [];
  const [start, end] = [Date.parse(trip.start_time), Date.parse(trip.end_time ?? trip.updated_at)];
  const found = [];
  let cursor = null;
  for (let page = 0; page < 5; page += 1) {
    const answer = await api("/v1/rejections", { limit: 1000, cursor });
    for (const r of answer.rejections) {
      if (r.vehicle_id !== trip.vehicle_id || r.point_index === undefined) continue;
      let point;
      try {
        point = JSON.parse(r.payload);
      } catch {
        continue;
      }
      const ts = point.ts ? Date.parse(point.ts) : point.ts_ms;
      const placed = Number.isFinite(point.lat) && Number.isFinite(point.lon) && Math.abs(point.lat) <= 90 && Math.abs(point.lon) <= 180;
      if (placed && ts >= start - 60000 && ts <= end + 60000) {
        found.push({ lat: point.lat, lon: point.lon, ts: new Date(ts).toISOString(), reason: r.reason });
      }
    }
    const oldest = answer.rejections.at(-1);
    cursor = answer.next_cursor;
    if (!cursor || !oldest || Date.parse(oldest.received_at) < start - 3600000) break;
  }
  return found;
}

function legend() {
  return h("ul", { class: "legend", "aria-label": "Track colours" },
    SPEED_BANDS.map((band) => h("li", {}, h("span", { class: "swatch", style: `background:${band.colour}` }), band.label)),
    EVENT_KINDS.map((kind) => h("li", {},
      h("span", { class: "swatch", style: `background:${EVENT_COLOURS[kind]};border-radius:50%;width:0.7rem;height:0.7rem` }),
      EVENT_LABELS[kind])),
    h("li", {}, h("span", { class: "swatch", style: "border:2px solid #a4161a;border-radius:50%;width:0.7rem;height:0.7rem" }), "rejected point"));
}

function tripFigures(trip, zone) {
  const row = (label, value) => [h("dt", {}, label), h("dd", {}, value)];
  return h("dl", { class: "figures" },
    row("Vehicle", trip.vehicle_id),
    row("Status", trip.status === "active" ? h("span", { class: "badge live", id: "live-badge" }, "active — live") : "completed"),
    row("Start", `${localTime(trip.start_time, zone)}${trip.start?.region ? ` (${trip.start.region})` : ""}`),
    row("End", `${localTime(trip.end_time, zone)}${trip.end?.region ? ` (${trip.end.region})` : ""}`),
    row("Distance", `${fmt(trip.distance_km, 2)} km`),
    row("Duration", duration(trip.duration_s)),
    row("Moving / idle", `${duration(trip.moving_time_s)} / ${duration(trip.idle_time_s)}`),
    row("Speed avg / max", `${fmt(trip.avg_speed_kmh)} / ${fmt(trip.max_speed_kmh)} km/h`),
    row("Score", fmt(trip.score)),
    row("Events", EVENT_KINDS.map((kind) => `${EVENT_LABELS[kind]} ${trip.events?.[kind] ?? 0}`).join(", ")),
    row("Speeding / night", `${duration(trip.speeding_s)} / ${duration(trip.night_driving_s)}`),
    row("Points", `${trip.point_count} kept, ${trip.rejected_point_count} rejected`),
    row("Regions", (trip.regions || []).join(", ") || "–"),
    row("Times in", zone));
}

function tripMap(trip, points, rejectedPoints, zone, detail) {
  const coords = points.map((p) => [p.lon, p.lat]).concat((trip.event_list || []).map((e) => [e.lon, e.lat]));
  if (!coords.length) return h("p", { class: "empty" }, "No points yet.");
  const map = new MapView(boundsOf(coords));
  map.svg.setAttribute("aria-label", `Map of trip ${trip.trip_id}: its track coloured by speed and its events`);
  map.svg.dataset.points = String(points.length);
  map.drawTiles();
  map.drawRegions();
  drawTrack(map, points);
  for (const rejected of rejectedPoints) {
    const [x, y] = map.project(rejected.lon, rejected.lat);
    const label = `rejected point at ${localTime(rejected.ts, zone)}: ${rejected.reason}`;
    map.layer.append(h("circle", { class: "rejected", cx: x, cy: y, r: 6 }, h("title", {}, label)));
  }
  (trip.event_list || []).forEach((event, i) => {
    const [x, y] = map.project(event.lon, event.lat);
    const label = `${EVENT_LABELS[event.kind] ?? event.kind} at ${localTime(event.ts, zone)}`;
    const show = () => {
      detail.hidden = false;
      detail.replaceChildren(h("h3", {}, EVENT_LABELS[event.kind] ?? event.kind),
        h("dl", { class: "figures" },
          h("dt", {}, "Time"), h("dd", {}, localTime(event.ts, zone)),
          h("dt", {}, "Peak"), h("dd", {}, `${fmt(event.value, 2)} ${event.unit === "m/s2" ? "m/s²" : event.unit}`),
          h("dt", {}, "Duration"), h("dd", {}, `${fmt(event.duration_s, 1)} s`),
          h("dt", {}, "Position"), h("dd", {}, `${fmt(event.lat, 5)}, ${fmt(event.lon, 5)}`)));
      detail.focus();
    };
    map.layer.append(h("circle", {
      class: "marker event-marker", cx: x, cy: y, r: 7, fill: EVENT_COLOURS[event.kind] ?? "#333",
      tabindex: 0, role: "button", "aria-label": label, "data-kind": event.kind, "data-index": i,
      onclick: show, onkeydown: (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); show(); } },
    }, h("title", {}, label)));
  });
  map.drawScale();
  return map.svg;
}

async function pointsTable(section, tripId, zone, cursor, back) {
  let page;
  try {
    page = await api(`/v1/trips/${encodeURIComponent(tripId)}/points`, { limit: PAGE_SIZE, cursor });
  } catch (error) {
    return showError(error, section);
  }
  const first = back.length * PAGE_SIZE;
  const rows = page.points.map((p, i) => h("tr", {},
    h("td", { class: "num" }, String(first + i + 1)),
    h("td", {}, localTime(p.ts, zone)),
    h("td", { class: "num" }, fmt(p.lat, 5)),
    h("td", { class: "num" }, fmt(p.lon, 5)),
    h("td", { class: "num" }, fmt(p.speed_kmh)),
    h("td", { class: "num" }, p.accel_mps2 === undefined ? "–" : fmt(p.accel_mps2, 2)),
    h("td", { class: "num" }, fmt(p.distance_m, 1)),
    h("td", {}, p.region ?? "–")));
  section.replaceChildren(
    h("div", { class: "table-wrap" }, h("table", { id: "points-table" },
      h("caption", {}, `Points ${page.points.length ? `${first + 1}–${first + page.points.length}` : ""}`),
      h("thead", {}, h("tr", {}, ["#", "Time", "Latitude", "Longitude", "Speed km/h", "Accel. m/s²", "Distance m", "Region"]
        .map((label, i) => h("th", { scope: "col", class: i === 1 || i === 7 ? null : "num" }, label)))),
      h("tbody", {}, rows))),
    h("div", { class: "pager" },
      h("button", { type: "button", class: "quiet", id: "points-prev", disabled: !back.length,
        onclick: () => pointsTable(section, tripId, zone, back.at(-1), back.slice(0, -1)) }, "Previous points"),
      h("button", { type: "button", class: "quiet", id: "points-next", disabled: !page.next_cursor,
        onclick: () => pointsTable(section, tripId, zone, page.next_cursor, back.concat([cursor])) }, "Next points")));
}

/**
 * Follows the live stream for `trip`'s vehicle and calls `changed` when the trip changes. The
 * stream needs the Bearer header, which EventSource cannot send, so it is read with fetch and
 * parsed here; it resumes from the last id after a drop. Returns a function that stops it.
 */
function follow(trip, changed) {
  const controller = new AbortController();
  let lastId = null;
  let pending = null;
  const schedule = () => {
    // Several messages in a burst make one refresh.
    clearTimeout(pending);
    pending = setTimeout(changed, 250);
  };
  const run = async () => {
    while (!controller.signal.aborted) {
      try {
        const headers = { Authorization: `Bearer ${apiKey()}`, Accept: "text/event-stream" };
        if (lastId) headers["Last-Event-ID"] = lastId;
        const response = await fetch(`/v1/stream?vehicle_id=${encodeURIComponent(trip.vehicle_id)}`, { headers, signal: controller.signal });
        if (!response.ok) throw new ApiError(response.status, "stream", `The live stream answered ${response.status}.`);
        // What changed before the stream opened (or while it was down) shows now.
        main.dataset.live = "following";
        schedule();
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            let data = "";
            for (const line of block.split("\n")) {
              if (line.startsWith("id:")) lastId = line.slice(3).trim();
              else if (line.startsWith("data:")) data += line.slice(5).trim();
            }
            if (!data) continue;
            const message = JSON.parse(data);
            if (message.data?.trip_id === trip.trip_id) schedule();
          }
        }
      } catch (error) {
        if (controller.signal.aborted) return;
        if (error.status === 401 || error.status === 404) return showError(error);
      }
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  };
  run();
  return () => {
    controller.abort();
    clearTimeout(pending);
    delete main.dataset.live;
  };
}

// ---------------------------------------------------------------------------------------------
// Fleet: stats by day (bar chart) and by vehicle

const METRICS = { distance_km: "Distance (km)", trips: "Trips", events: "Events", avg_score: "Average score" };

async function fleetView(params) {
  const zone = zoneOf(params);
  const metric = METRICS[params.get("metric")] ? params.get("metric") : "distance_km";
  const now = Date.now();
  const from = params.get("from") || new Date(now - 30 * 86400000).toISOString();
  const to = params.get("to") || "";
  const form = h("form", { id: "fleet-form", "aria-label": "Fleet statistics" },
    h("fieldset", {}, h("legend", {}, "Fleet"),
      h("div", { class: "form-grid" },
        h("label", {}, "From", h("input", { type: "datetime-local", name: "from", value: utcToWall(from, zone) })),
        h("label", {}, "To", h("input", { type: "datetime-local", name: "to", value: utcToWall(to, zone) })),
        h("label", {}, "Time zone", h("input", { name: "tz", value: zone })),
        h("label", {}, "Vehicle", h("input", { name: "vehicle_id", value: params.get("vehicle_id") ?? "" })),
        h("label", {}, "Chart", h("select", { name: "metric" },
          Object.entries(METRICS).map(([value, label]) => h("option", { value, selected: value === metric }, label))))),
      h("div", { class: "actions" }, h("button", { type: "submit" }, "Show"))));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const tz = String(data.get("tz") || "UTC").trim();
    if (!knownZone(tz)) return;
    const next = new URLSearchParams();
    for (const name of ["from", "to"]) if (data.get(name)) next.set(name, wallToUtc(String(data.get(name)), tz));
    if (String(data.get("vehicle_id") || "").trim()) next.set("vehicle_id", String(data.get("vehicle_id")).trim());
    next.set("tz", tz);
    next.set("metric", String(data.get("metric")));
    go("fleet", next);
  });
  const byDay = h("section", { "aria-labelledby": "by-day" });
  const byVehicle = h("section", { "aria-labelledby": "by-vehicle" });
  main.replaceChildren(h("h2", {}, "Fleet"), form, byDay, byVehicle);
  const filter = { from, to, vehicle_id: params.get("vehicle_id") ?? "" };
  say("Loading statistics…");
  let days;
  let vehicles;
  try {
    [days, vehicles] = await Promise.all([
      api("/v1/stats", { ...filter, group_by: "day", tz: zone }),
      api("/v1/stats", { ...filter, group_by: "vehicle_id" }),
    ]);
  } catch (error) {
    say("");
    return showError(error, byDay);
  }
  say("");
  byDay.replaceChildren(h("h3", { id: "by-day" }, `${METRICS[metric]} by day (${zone})`), dayChart(days.buckets, metric));
  byVehicle.replaceChildren(h("h3", { id: "by-vehicle" }, "By vehicle"), vehicleTable(vehicles.buckets));
}

function dayChart(buckets, metric) {
  if (!buckets.length) return h("p", { class: "empty" }, "No trips in this period.");
  const sorted = [...buckets].sort((a, b) => a.key.localeCompare(b.key));
  const [width, height, left, bottom, top] = [900, 300, 48, 40, 12];
  const max = Math.max(...sorted.map((b) => b[metric] ?? 0), 1);
  // Bars at most 60 px wide: a few days do not fill the chart with one slab.
  const step = Math.min((width - left) / sorted.length, 60);
  const y = (v) => top + (height - top - bottom) * (1 - v / max);
  const svg = h("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, role: "img", id: "day-chart",
    "aria-label": `${METRICS[metric]} by day: ${sorted.map((b) => `${b.key} ${fmt(b[metric], metric === "trips" || metric === "events" ? 0 : 1)}`).join("; ")}` });
  for (const tick of [0, 0.5, 1]) {
    svg.append(h("line", { x1: left, x2: width, y1: y(max * tick), y2: y(max * tick) }),
      h("text", { x: left - 6, y: y(max * tick) + 4, "text-anchor": "end" }, fmt(max * tick, max < 10 ? 1 : 0)));
  }
  const labelEvery = Math.ceil(sorted.length / 15);
  sorted.forEach((bucket, i) => {
    const value = bucket[metric] ?? 0;
    const x = left + i * step + step * 0.1;
    svg.append(h("rect", { class: "bar", x, y: y(value), width: step * 0.8, height: Math.max(0, y(0) - y(value)) },
      h("title", {}, `${bucket.key}: ${fmt(value, 2)}`)));
    if (i % labelEvery === 0) svg.append(h("text", { x: x + step * 0.4, y: height - bottom + 16, "text-anchor": "middle" }, bucket.key.slice(5)));
  });
  return svg;
}

function vehicleTable(buckets) {
  if (!buckets.length) return h("p", { class: "empty" }, "No vehicles with trips in this period.");
  return h("div", { class: "table-wrap" }, h("table", { id: "vehicle-table" },
    h("caption", {}, "Trips by vehicle"),
    h("thead", {}, h("tr", {}, ["Vehicle", "Trips", "Distance km", "Events", "Average score"]
      .map((label, i) => h("th", { scope: "col", class: i ? "num" : null }, label)))),
    h("tbody", {}, buckets.map((b) => h("tr", {},
      h("td", {}, h("a", { href: `#trips?vehicle_id=${encodeURIComponent(b.key)}` }, b.key)),
      h("td", { class: "num" }, String(b.trips)),
      h("td", { class: "num" }, fmt(b.distance_km, 1)),
      h("td", { class: "num" }, String(b.events)),
      h("td", { class: "num" }, fmt(b.avg_score)))))));
}

/** The polygons of a GeoJSON FeatureCollection, with their names and bounds. */
function regionsOf(collection) {
  const out = [];
  for (const feature of collection.features ?? []) {
    const geometry = feature.geometry ?? {};
    const polygons = geometry.type === "Polygon" ? [geometry.coordinates] : geometry.type === "MultiPolygon" ? geometry.coordinates : [];
    const rings = polygons.flat().filter((ring) => Array.isArray(ring) && ring.length > 2);
    if (!rings.length) continue;
    const all = rings.flat();
    out.push({
      name: feature.properties?.name ?? "",
      rings,
      bbox: [Math.min(...all.map((c) => c[0])), Math.min(...all.map((c) => c[1])), Math.max(...all.map((c) => c[0])), Math.max(...all.map((c) => c[1]))],
    });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Start

async function start() {
  const form = document.getElementById("key-form");
  const input = document.getElementById("api-key");
  const forget = document.getElementById("forget-key");
  const reflect = () => {
    forget.hidden = !apiKey();
    input.placeholder = apiKey() ? "key in use" : "";
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = input.value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY_STORE, key);
    input.value = "";
    reflect();
    route();
  });
  forget.addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORE);
    reflect();
    route();
  });
  reflect();
  try {
    const [settings, outlines] = await Promise.all([fetch("/ui/config.json"), fetch("/ui/regions.geojson")]);
    if (settings.ok) config = await settings.json();
    if (outlines.ok) regions = regionsOf(await outlines.json());
  } catch {
    // The page works without tiles and outlines.
  }
  window.addEventListener("hashchange", route);
  route();
}

start();
