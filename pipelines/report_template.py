"""The Jinja2 template of the report page (see report_html.py for what fills it).

Kept in a module rather than a file beside it, so it ships with the package without any
package-data setting. Styles are inline; the page loads nothing and runs no script.
"""

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<meta name="generator" content="clipcrawl report">
<title>{{ title }}</title>
<style>
:root { --kept: #2e7d32; --rejected: #ef6c00; --failed: #c62828; --ink: #1f2933; --muted: #61707d; --line: #e3e8ec; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; color: var(--ink); background: #f6f8fa; }
header { background: #17212b; color: #fff; padding: 20px 32px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header p { margin: 0; color: #b8c4ce; font-size: 13px; word-break: break-all; }
nav { background: #fff; border-bottom: 1px solid var(--line); padding: 8px 32px; position: sticky; top: 0; z-index: 1; }
nav a { color: var(--muted); margin-right: 16px; text-decoration: none; font-size: 13px; }
nav a:hover { color: var(--ink); }
main { max-width: 1280px; margin: 0 auto; padding: 16px 32px 48px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 16px 20px; margin: 16px 0; }
h2 { font-size: 17px; margin: 0 0 12px; }
h3 { font-size: 14px; margin: 16px 0 8px; color: var(--muted); }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(140px, 1fr)); gap: 12px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; }
.card b { display: block; font-size: 22px; }
.card span { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.findings li { margin: 4px 0; }
.row { display: grid; grid-template-columns: repeat(auto-fit, minmax(480px, 1fr)); gap: 16px; align-items: start; }
figure.plot { margin: 0; max-width: 760px; }
figure.plot img { width: 100%; height: auto; display: block; }
figure.plot figcaption { font-weight: 600; margin-bottom: 4px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { color: var(--muted); font-weight: 600; background: #fafbfc; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.chip { display: inline-block; padding: 1px 8px; border-radius: 10px; color: #fff; font-size: 12px; white-space: nowrap; }
.bar { background: #edf1f4; border-radius: 3px; height: 8px; min-width: 80px; }
.bar i { display: block; height: 8px; border-radius: 3px; background: var(--kept); }
.muted { color: var(--muted); }
.url { word-break: break-all; font-size: 12px; }
.scroll { max-height: 520px; overflow: auto; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 12px; }
.grid figure { margin: 0; border: 1px solid var(--line); border-radius: 6px; overflow: hidden; background: #fff; }
.grid img { width: 100%; aspect-ratio: 1; object-fit: contain; background: #eef1f4; display: block; }
.grid figcaption { padding: 6px 8px; font-size: 12px; }
.grid .score { font-weight: 700; }
.grid.kept .score { color: var(--kept); }
.grid.rejected .score { color: var(--rejected); }
.problems { color: var(--failed); }
</style>
</head>
<body>
<header>
  <h1>clipcrawl report</h1>
  <p>{{ data.root }} · generated {{ data.generated_at }}</p>
</header>
<nav>
  <a href="#summary">Summary</a><a href="#why">Why not kept</a><a href="#similarity">Similarity</a>
  <a href="#failures">Failures</a><a href="#captions">Captions</a><a href="#images">Images</a>
  <a href="#speed">Speed &amp; shards</a><a href="#samples">Samples</a><a href="#input">Input</a>
</nav>
<main>
<section id="summary">
  <h2>Summary</h2>
  <div class="cards">
  {% for label, value in cards %}<div class="card"><b>{{ value }}</b><span>{{ label }}</span></div>{% endfor %}
  </div>
  <ul class="findings">{% for note in findings %}<li>{{ note }}</li>{% endfor %}</ul>
  {% if data.problems %}<h3>Notes on the files read</h3>
  <ul class="problems">{% for problem in data.problems %}<li>{{ problem }}</li>{% endfor %}</ul>{% endif %}
</section>

{% macro plot(name) %}{% if name in plots %}{% set p = plots[name] %}
<figure class="plot" id="plot-{{ p.name }}"><figcaption>{{ p.title }}</figcaption><img src="{{ p.uri }}" alt="{{ p.alt }}"></figure>
{% endif %}{% endmacro %}

<section id="why">
  <h2>Why candidates were not kept</h2>
  <div class="row">{{ plot("funnel") }}{{ plot("statuses") }}</div>
  <h3>Statuses and their most common reasons</h3>
  <table>
    <tr><th>status</th><th class="n">candidates</th><th class="n">share</th><th>meaning</th><th>top reasons</th></tr>
    {% for row in statuses %}
    <tr><td><span class="chip" style="background: {{ row.colour }}">{{ row.status }}</span></td>
      <td class="n">{{ row.count | number }}</td><td class="n">{{ row.share | pct }}</td><td>{{ row.meaning }}</td>
      <td>{% for kind, n in row.reasons %}{{ kind }} <span class="muted">({{ n | number }})</span>{% if not loop.last %}<br>{% endif %}{% endfor %}</td></tr>
    {% endfor %}
  </table>
</section>

<section id="similarity">
  <h2>CLIP similarity</h2>
  {{ plot("similarity") }}
  <p class="muted">Threshold {{ "–" if data.threshold is none else "%g" | format(data.threshold) }}: {{ data.threshold_note }}.</p>
</section>

<section id="failures">
  <h2>Failures</h2>
  <div class="row">
  <div><h3>Error kinds</h3><div class="scroll"><table>
    <tr><th>status</th><th>kind</th><th class="n">count</th></tr>
    {% for status, kind, n in kinds %}<tr><td>{{ status }}</td><td>{{ kind }}</td><td class="n">{{ n | number }}</td></tr>{% endfor %}
  </table></div></div>
  <div><h3>Top failing hosts</h3><div class="scroll"><table>
    <tr><th>host</th><th class="n">failures</th><th class="n">candidates</th><th>by status</th></tr>
    {% for row in hosts %}<tr><td class="url">{{ row.host }}</td><td class="n">{{ row.failures | number }}</td>
      <td class="n">{{ row.candidates | number }}</td>
      <td>{% for status, n in row.statuses %}{{ status }} {{ n | number }}{% if not loop.last %}, {% endif %}{% endfor %}</td></tr>
    {% else %}<tr><td colspan="4" class="muted">no download-side failures</td></tr>{% endfor %}
  </table></div>
  <h3>HTTP status codes</h3><table>
    <tr><th>code</th><th class="n">responses</th></tr>
    {% for code, n in http %}<tr><td>{{ code }}</td><td class="n">{{ n | number }}</td></tr>
    {% else %}<tr><td colspan="2" class="muted">no responses</td></tr>{% endfor %}
  </table></div>
  </div>
  <h3>Examples</h3>
  <div class="scroll"><table>
    <tr><th>status</th><th>url</th><th>caption</th><th>error</th></tr>
    {% for row in examples %}<tr><td>{{ row.status }}</td>
      <td class="url">{% if row.link %}<a href="{{ row.link }}" rel="noreferrer nofollow">{{ row.url }}</a>{% else %}{{ row.url }}{% endif %}</td>
      <td>{{ row.caption }}</td><td>{{ row.error_message }}</td></tr>
    {% else %}<tr><td colspan="4" class="muted">nothing failed</td></tr>{% endfor %}
  </table></div>
</section>

<section id="captions">
  <h2>Captions</h2>
  <div class="row">{{ plot("captions") }}{{ plot("languages") }}</div>
  <h3>Languages</h3>
  <table>
    <tr><th>language</th><th class="n">candidates</th><th class="n">kept</th><th class="n">kept rate</th></tr>
    {% for code, n, kept, rate in languages %}<tr><td>{{ code }}</td><td class="n">{{ n | number }}</td>
      <td class="n">{{ kept | number }}</td><td class="n">{{ rate | pct }}</td></tr>{% endfor %}
  </table>
</section>

<section id="images">
  <h2>Images</h2>
  {{ plot("sizes") }}
</section>

<section id="speed">
  <h2>Speed and shards</h2>
  <div class="row">{{ plot("fetch") }}{{ plot("shards") }}</div>
  <h3>Per shard</h3>
  <div class="scroll"><table>
    <tr><th>shard</th><th>source</th><th class="n">candidates</th><th class="n">images</th><th class="n">kept</th>
      <th>kept rate</th><th class="n">downloads</th><th class="n">fetch p50</th><th class="n">fetch p90</th>
      <th class="n">write</th><th>written at</th></tr>
    {% for row in shards %}{% set info = row.info %}
    <tr><td>{{ "%06d" | format(info.shard_no) }}</td><td class="url" title="{{ info.source }}">{{ row.source }}</td>
      <td class="n">{{ info.candidates | number }}</td><td class="n">{{ info.images_ok | number }}</td>
      <td class="n">{{ info.kept | number }}</td>
      <td><div class="bar"><i style="width: {{ "%.1f" | format(100 * (info.kept_rate or 0)) }}%"></i></div>{{ info.kept_rate | pct }}</td>
      <td class="n">{{ row.fetch_rate }}</td><td class="n">{{ info.fetch_p50 | seconds }}</td>
      <td class="n">{{ info.fetch_p90 | seconds }}</td><td class="n">{{ info.write_seconds | seconds }}</td>
      <td class="muted">{{ info.written_at or "–" }}</td></tr>
    {% endfor %}
  </table></div>
  {% if shards_left_out %}<p class="muted">{{ shards_left_out | number }} more shards not listed.</p>{% endif %}
  <p class="muted">Downloads: responses per second over the shard's first-to-last response (one worker's view).</p>
</section>

<section id="samples">
  <h2>Samples</h2>
  <h3>Kept ({{ kept_grid | length }}, spread over the similarity range, lowest first)</h3>
  <div class="grid kept">
  {% for card in kept_grid %}<figure><img src="{{ card.uri }}" alt="{{ card.caption }}">
    <figcaption><span class="score">{{ card.similarity }}</span> {{ card.caption }}<br>
    <span class="muted">{% if card.link %}<a href="{{ card.link }}" rel="noreferrer nofollow">{{ card.key }}</a>{% else %}{{ card.key }}{% endif %}</span></figcaption></figure>
  {% else %}<p class="muted">no kept samples</p>{% endfor %}
  </div>
  <h3>Rejected below the threshold ({{ rejected_grid | length }}, closest to the threshold first; the run keeps previews of a fraction, --preview_rate)</h3>
  <div class="grid rejected">
  {% for card in rejected_grid %}<figure><img src="{{ card.uri }}" alt="{{ card.caption }}">
    <figcaption><span class="score">{{ card.similarity }}</span> {{ card.caption }}<br>
    <span class="muted">{% if card.link %}<a href="{{ card.link }}" rel="noreferrer nofollow">{{ card.key }}</a>{% else %}{{ card.key }}{% endif %}</span></figcaption></figure>
  {% else %}<p class="muted">no previews of rejected images (the run keeps them for --preview_rate of below_threshold rows)</p>{% endfor %}
  </div>
</section>

<section id="input">
  <h2>Input</h2>
  <p>{{ data.read.records | number }} records read; {{ data.read.non_http_links | number }} image links that were not http(s) skipped.</p>
  {% if bad_records %}<table><tr><th>bad record kind</th><th class="n">records</th></tr>
    {% for kind, n in bad_records %}<tr><td>{{ kind }}</td><td class="n">{{ n | number }}</td></tr>{% endfor %}</table>
  <ul class="muted">{% for example in data.read.bad_record_examples %}<li>{{ example }}</li>{% endfor %}</ul>
  {% else %}<p class="muted">No malformed records.</p>{% endif %}
</section>
</main>
</body>
</html>
"""
