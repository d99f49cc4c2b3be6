-- orthanc-notify.lua: tell radbridge about every stable study in Orthanc,
-- without DICOM forwarding. Load it with Orthanc's "LuaScripts" option.
--
-- When a study has received no new instance for "StableAge" seconds,
-- Orthanc calls OnStableStudy; this script reads the header attributes of
-- every instance of the study and POSTs them as DICOM JSON (PS3.18 F.2) to
-- radbridge's /v1/dicom/notifications with "complete": true, so radbridge
-- emits IMAGING_STUDY_AVAILABLE at once.
--
-- Settings (environment of the Orthanc process, or edit the defaults):
--   RADBRIDGE_URL    radbridge's HTTP front, e.g. http://radbridge:8080
--   RADBRIDGE_TOKEN  a bearer token when radbridge runs with --auth

local getenv = (os and os.getenv) or function() return nil end
local RADBRIDGE_URL = getenv('RADBRIDGE_URL') or 'http://127.0.0.1:8080'
local RADBRIDGE_TOKEN = getenv('RADBRIDGE_TOKEN') or ''

-- The attributes radbridge reads, with their VRs (PS3.6).
local ATTRIBUTES = {
  ['00080016'] = 'UI', -- SOPClassUID
  ['00080018'] = 'UI', -- SOPInstanceUID
  ['0020000D'] = 'UI', -- StudyInstanceUID
  ['0020000E'] = 'UI', -- SeriesInstanceUID
  ['00080005'] = 'CS', -- SpecificCharacterSet
  ['00100020'] = 'LO', -- PatientID
  ['00100021'] = 'LO', -- IssuerOfPatientID
  ['00100010'] = 'PN', -- PatientName
  ['00100030'] = 'DA', -- PatientBirthDate
  ['00100040'] = 'CS', -- PatientSex
  ['00080050'] = 'SH', -- AccessionNumber
  ['00080060'] = 'CS', -- Modality
  ['00180015'] = 'CS', -- BodyPartExamined
  ['00081030'] = 'LO', -- StudyDescription
  ['0008103E'] = 'LO', -- SeriesDescription
  ['00080020'] = 'DA', -- StudyDate
  ['00080030'] = 'TM', -- StudyTime
  ['00200010'] = 'SH', -- StudyID
  ['00080090'] = 'PN', -- ReferringPhysicianName
  ['00200011'] = 'IS', -- SeriesNumber
  ['00200013'] = 'IS', -- InstanceNumber
  ['00280008'] = 'IS', -- NumberOfFrames
}

-- toDicomJson turns Orthanc's short tags ({"0010,0010": "Doe^Jane"}) into
-- a DICOM JSON data set of the attributes above.
local function toDicomJson(short)
  local ds = {}
  for key, value in pairs(short) do
    local tag = string.upper(string.gsub(key, ',', ''))
    local vr = ATTRIBUTES[tag]
    if vr ~= nil and type(value) == 'string' then
      value = string.gsub(value, '^%s+', '')
      value = string.gsub(value, '%s+$', '')
      if value ~= '' then
        if vr == 'PN' then
          ds[tag] = { vr = vr, Value = { { Alphabetic = value } } }
        else
          ds[tag] = { vr = vr, Value = { value } }
        end
      end
    end
  end
  return ds
end

function OnStableStudy(studyId, tags, metadata)
  local all = ParseJson(RestApiGet('/studies/' .. studyId .. '/instances-tags?short'))
  local instances = {}
  for _, short in pairs(all) do
    table.insert(instances, toDicomJson(short))
  end
  if #instances == 0 then
    return
  end
  -- DumpJson(x, true) keeps strings as strings ("0042" must not become
  -- 42), but it also writes numbers as strings: the count is spliced in.
  local body = '{"complete":true,"number_of_instances":' .. #instances ..
    ',"instances":' .. DumpJson(instances, true) .. '}'
  local headers = { ['Content-Type'] = 'application/json' }
  if RADBRIDGE_TOKEN ~= '' then
    headers['Authorization'] = 'Bearer ' .. RADBRIDGE_TOKEN
  end
  local ok, answer = pcall(HttpPost, RADBRIDGE_URL .. '/v1/dicom/notifications', body, headers)
  if ok and answer ~= nil and answer ~= '' then
    print('radbridge notified of study ' .. studyId .. ' (' .. #instances .. ' instances): ' .. answer)
  else
    print('radbridge notification of study ' .. studyId .. ' failed: ' .. tostring(answer))
  end
end
