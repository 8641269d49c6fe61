-- Argo CD health check of a moorage.dev OpenSourceModel (argocd-cm key
-- resource.customizations.health.moorage.dev_OpenSourceModel; see docs/install.md).
--   Healthy      Ready=True for the current generation
--   Degraded     Stalled=True: the operator gave up until a person changes something (a failed rollout
--                rolled back to the last Ready revision too: reason RolledBack, with the failing pod's words)
--   Progressing  anything else (resolving, pulling, training, rolling out), with the Ready message
local hs = { status = "Progressing", message = "Waiting for the moorage operator" }
if obj.status == nil or obj.status.conditions == nil then
  return hs
end

local ready = nil
local stalled = nil
for _, condition in ipairs(obj.status.conditions) do
  if condition.type == "Ready" then
    ready = condition
  elseif condition.type == "Stalled" then
    stalled = condition
  end
end

local function text(condition)
  if condition.message ~= nil and condition.message ~= "" then
    return condition.message
  end
  return condition.reason or ""
end

-- Conditions written for an older spec say nothing about the current one.
local function current(condition)
  local generation = obj.metadata.generation
  local observed = condition.observedGeneration or obj.status.observedGeneration
  return generation == nil or observed == nil or observed >= generation
end

if stalled ~= nil and stalled.status == "True" and current(stalled) then
  hs.status = "Degraded"
  hs.message = text(stalled)
  return hs
end
if ready ~= nil and ready.status == "True" and current(ready) then
  hs.status = "Healthy"
  hs.message = text(ready)
  return hs
end
if ready ~= nil then
  if current(ready) then
    hs.message = text(ready)
  else
    hs.message = "Waiting for the operator to observe generation " .. tostring(obj.metadata.generation)
  end
end
return hs
