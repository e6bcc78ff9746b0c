// Small display helpers.

export function formatBytes(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return "—";
  if (n < 1000) return `${n} B`;
  const units = ["kB", "MB", "GB", "TB"];
  let v = n;
  let i = -1;
  do {
    v /= 1000;
    i += 1;
  } while (v >= 1000 && i < units.length - 1);
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

export function formatDuration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "—";
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  const mm = h > 0 ? String(m).padStart(2, "0") : String(m);
  return `${h > 0 ? `${h}:` : ""}${mm}:${String(sec).padStart(2, "0")}`;
}

export function formatDateTime(iso: string | null | undefined): string {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

const rtf =
  typeof Intl !== "undefined" && "RelativeTimeFormat" in Intl
    ? new Intl.RelativeTimeFormat(undefined, { numeric: "auto" })
    : null;

/** "in 23 hours", "5 minutes ago". */
export function formatRelative(iso: string | null | undefined, now = Date.now()): string {
  if (!iso) return "";
  const t = new Date(iso).getTime();
  if (Number.isNaN(t) || !rtf) return "";
  const diff = (t - now) / 1000;
  const abs = Math.abs(diff);
  if (abs < 45) return rtf.format(Math.round(diff), "second");
  if (abs < 45 * 60) return rtf.format(Math.round(diff / 60), "minute");
  if (abs < 36 * 3600) return rtf.format(Math.round(diff / 3600), "hour");
  return rtf.format(Math.round(diff / 86400), "day");
}

/** "video/webm;codecs=h264" → "H.264 (WebM)". */
export function describeMime(mime: string | null | undefined): string {
  if (!mime) return "browser default";
  const [container, ...params] = mime.split(";");
  const codecs = params
    .map((p) => p.trim())
    .find((p) => p.startsWith("codecs="))
    ?.slice("codecs=".length)
    .replace(/"/g, "");
  const sub = container.split("/")[1]?.trim().toLowerCase() ?? "";
  const box = sub === "mp4" ? "MP4" : sub.includes("matroska") ? "Matroska" : sub === "ogg" ? "Ogg" : "WebM";
  const names = (codecs ?? "")
    .split(",")
    .map((c) => c.trim().toLowerCase())
    .filter(Boolean)
    .map((c) => {
      if (c.startsWith("h264") || c.startsWith("avc1")) return "H.264";
      if (c.startsWith("vp9") || c.startsWith("vp09")) return "VP9";
      if (c.startsWith("vp8")) return "VP8";
      if (c.startsWith("av1") || c.startsWith("av01")) return "AV1";
      if (c === "opus") return "Opus";
      if (c.startsWith("mp4a")) return "AAC";
      return c;
    });
  return names.length ? `${names.join(" + ")} (${box})` : box;
}
