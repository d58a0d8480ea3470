// Light markdown for message texts: **bold**, _italic_, `code`, ``` fenced
// code blocks, > quotes, and links for http(s):// and www. addresses.
// parse() is pure (tests/js/markdown.test.mjs); render() builds DOM nodes
// from the parse with createElement and text nodes only: user text never
// reaches innerHTML, and the only attribute taken from it is an http(s) href.

const LINK = String.raw`(?:https?:\/\/|www\.)[^\s<>"']*[^\s<>"'.,;:!?)\]]`;
const INLINE = new RegExp(
  '`([^`\\n]+)`' +                                            // 1: code
  '|\\*\\*(?=\\S)([^\\n]*?\\S)\\*\\*' +                        // 2: bold
  '|(?<![\\p{L}\\p{N}_])_(?=\\S)([^_\\n]*?\\S)_(?![\\p{L}\\p{N}_])' + // 3: italic
  '|(?<![\\p{L}\\p{N}_.\\/])(' + LINK + ')',                     // 4: link
  'gu');

// Inline tokens: {t:'text',v} {t:'code',v} {t:'strong',kids} {t:'em',kids}
// {t:'link',href,v}.
export function parseInline(text) {
  const out = [];
  let at = 0;
  for (const m of text.matchAll(INLINE)) {
    if (m.index > at) out.push({ t: 'text', v: text.slice(at, m.index) });
    if (m[1] !== undefined) out.push({ t: 'code', v: m[1] });
    else if (m[2] !== undefined) out.push({ t: 'strong', kids: parseInline(m[2]) });
    else if (m[3] !== undefined) out.push({ t: 'em', kids: parseInline(m[3]) });
    else out.push({ t: 'link', href: /^www\./i.test(m[4]) ? 'https://' + m[4] : m[4], v: m[4] });
    at = m.index + m[0].length;
  }
  if (at < text.length) out.push({ t: 'text', v: text.slice(at) });
  return out;
}

// Blocks: {t:'p',kids} (lines joined by '\n', shown with pre-wrap),
// {t:'pre',v} (a fenced block, not formatted), {t:'quote',kids}.
export function parse(text) {
  const lines = String(text).split('\n');
  const blocks = [];
  let para = null;
  let quote = null;
  const flush = () => {
    if (para) blocks.push({ t: 'p', kids: parseInline(para.join('\n')) });
    if (quote) blocks.push({ t: 'quote', kids: parseInline(quote.join('\n')) });
    para = quote = null;
  };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (/^```/.test(line)) {
      const end = lines.findIndex((l, j) => j > i && /^```\s*$/.test(l));
      if (end > i) {
        flush();
        blocks.push({ t: 'pre', v: lines.slice(i + 1, end).join('\n') });
        i = end;
        continue;
      }
    }
    const q = /^>\s?(.*)$/.exec(line);
    if (q) {
      if (para) flush();
      (quote = quote || []).push(q[1]);
      continue;
    }
    if (quote) flush();
    (para = para || []).push(line);
  }
  flush();
  return blocks;
}

// DOM nodes for a parse, appended to `into` (an element). doc: the document.
export function render(blocks, into, doc = document) {
  const inline = (toks, parent) => {
    for (const k of toks) {
      if (k.t === 'text') parent.append(doc.createTextNode(k.v));
      else if (k.t === 'code') { const c = doc.createElement('code'); c.textContent = k.v; parent.append(c); }
      else if (k.t === 'strong' || k.t === 'em') { const e = doc.createElement(k.t); inline(k.kids, e); parent.append(e); }
      else if (k.t === 'link' && /^https?:\/\//i.test(k.href)) {
        const a = doc.createElement('a');
        a.href = k.href;
        a.target = '_blank';
        a.rel = 'noopener noreferrer nofollow';
        a.textContent = k.v;
        parent.append(a);
      }
    }
  };
  for (const b of blocks) {
    if (b.t === 'p') inline(b.kids, into);
    else if (b.t === 'pre') { const p = doc.createElement('pre'); const c = doc.createElement('code'); c.textContent = b.v; p.append(c); into.append(p); }
    else if (b.t === 'quote') { const q = doc.createElement('blockquote'); inline(b.kids, q); into.append(q); }
  }
  return into;
}
