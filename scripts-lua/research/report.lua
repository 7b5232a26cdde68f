-- research.report: the default report template (kit.template syntax).
return [[
# Research run {{run_id}}

- status: **{{status}}** {{reason}}
- incident tags: {{tags}}
- job: `{{job}}`
- output: {{out}}
- duration: {{duration_s}} s
- missing artifacts: {{missing}}

## Metrics

```json
{{metrics}}
```

## Registry

{{registry.runs}} runs: {{registry.succeeded}} succeeded, {{registry.failed}} failed, {{registry.cancelled}} cancelled.

Best by {{metric}} ({{mode}}): {{best.run_id}} = {{best.value}}
]]
