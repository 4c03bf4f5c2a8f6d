-- Argo CD health check for visitcounter.dev/VisitCounterApp.
-- Healthy only when the operator has seen the current generation and says
-- Ready; Degraded when it reports Stalled (only a person can unblock it) or
-- Degraded (a stuck rollout stalls it); Suspended while paused
-- (visitcounter.dev/paused: "true"); Progressing otherwise, with the
-- operator's own message. A held canary is Healthy, saying it is held, as
-- Argo CD says of a partitioned StatefulSet.
local hs = {status = "Progressing", message = "Waiting for the operator to report a status"}

local function condition(conditions, type_)
  for _, c in ipairs(conditions) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

if obj.status == nil or obj.status.conditions == nil then
  return hs
end
local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local conditions = obj.status.conditions
local paused = condition(conditions, "Paused")
if paused ~= nil and paused.status == "True" then
  hs.status = "Suspended"
  hs.message = paused.message or paused.reason
  return hs
end
local stalled = condition(conditions, "Stalled")
local degraded = condition(conditions, "Degraded")
local ready = condition(conditions, "Ready")
local progressing = condition(conditions, "Progressing")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = stalled.message or stalled.reason
elseif degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = degraded.message or degraded.reason
elseif ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or ready.reason
  if progressing ~= nil and progressing.reason == "RolloutHeld" then
    hs.message = progressing.message
  end
elseif progressing ~= nil and progressing.status == "True" then
  hs.message = progressing.message or progressing.reason
elseif ready ~= nil then
  hs.message = ready.message or ready.reason
end
return hs
