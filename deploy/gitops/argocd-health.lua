-- Argo CD health check for orchestrator.dev/Agent: the value of
-- resource.customizations.health.orchestrator.dev_Agent in argocd-cm (docs/gitops.md).
-- It reads the kstatus conditions the controller writes, in kstatus' order, so Argo CD and
-- Flux agree: Reconciling -> Progressing (pending, running, or completed and being cleaned up),
-- Stalled -> Degraded (failed, errored, terminated, or no node can take it), Ready -> Healthy
-- (completed and cleaned up). The message names the phase and its reason, then the Agent's message.
local hs = { status = "Progressing", message = "Waiting for the agent-operator controller" }
local status = obj.status or {}
if obj.metadata.generation ~= nil and status.observedGeneration ~= obj.metadata.generation then
  hs.message = "Waiting for the agent-operator controller to observe generation " .. tostring(obj.metadata.generation)
  return hs
end
if status.conditions == nil then
  return hs
end

local conditions = {}
for _, c in ipairs(status.conditions) do
  conditions[c.type] = c
end
local function describe(c)
  local text = tostring(status.phase or "Unknown") .. " (" .. tostring(c.reason or "") .. ")"
  if c.message ~= nil and c.message ~= "" then
    text = text .. ": " .. c.message
  end
  return text
end
local function holds(type)
  return conditions[type] ~= nil and conditions[type].status == "True"
end

if holds("Reconciling") then
  hs.message = describe(conditions.Reconciling)
elseif holds("Stalled") then
  hs.status = "Degraded"
  hs.message = describe(conditions.Stalled)
elseif holds("Ready") then
  hs.status = "Healthy"
  hs.message = describe(conditions.Ready)
elseif conditions.Ready ~= nil then
  hs.message = describe(conditions.Ready)
end
return hs
