// Reads a DICOM SEG and its source series with dcmjs (the DICOM library of
// the OHIF viewer), as a second reader independent of DCMTK and pydicom,
// and prints what a viewer needs to place it:
//   node check_seg.js SEG.dcm SOURCE_DIR
//   -> {"segments": [{number, label, rgb_lab}], "frames_per_segment": {...},
//       "frames_off_slice": n, "referenced_series": uid, "unknown_references": n}
const fs = require("fs");
const path = require("path");
const dcmjs = require("dcmjs");

function read(file) {
  const bytes = fs.readFileSync(file);
  const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
  const dicom = dcmjs.data.DicomMessage.readFile(buffer);
  return dcmjs.data.DicomMetaDictionary.naturalizeDataset(dicom.dict);
}

const asArray = (v) => (v === undefined ? [] : Array.isArray(v) ? v : [v]);

const [segPath, sourceDir] = process.argv.slice(2);
const seg = read(segPath);
const sources = fs.readdirSync(sourceDir).map((f) => read(path.join(sourceDir, f)));
const sopUids = new Set(sources.map((s) => s.SOPInstanceUID));
const positions = sources.map((s) => s.ImagePositionPatient.map(Number));

const segments = asArray(seg.SegmentSequence).map((s) => ({
  number: s.SegmentNumber,
  label: s.SegmentLabel,
  lab: s.RecommendedDisplayCIELabValue,
}));
const framesPerSegment = {};
let offSlice = 0;
let unknownReferences = 0;
for (const frame of asArray(seg.PerFrameFunctionalGroupsSequence)) {
  const number = asArray(frame.SegmentIdentificationSequence)[0].ReferencedSegmentNumber;
  framesPerSegment[number] = (framesPerSegment[number] || 0) + 1;
  const p = asArray(frame.PlanePositionSequence)[0].ImagePositionPatient.map(Number);
  const nearest = Math.min(...positions.map((q) => Math.hypot(p[0] - q[0], p[1] - q[1], p[2] - q[2])));
  if (nearest > 0.01) offSlice += 1;
  for (const derivation of asArray(frame.DerivationImageSequence))
    for (const source of asArray(derivation.SourceImageSequence))
      if (!sopUids.has(source.ReferencedSOPInstanceUID)) unknownReferences += 1;
}
const referencedSeries = asArray(seg.ReferencedSeriesSequence).map((s) => s.SeriesInstanceUID);
console.log(JSON.stringify({
  number_of_frames: Number(seg.NumberOfFrames),
  segments,
  frames_per_segment: framesPerSegment,
  frames_off_slice: offSlice,
  unknown_references: unknownReferences,
  referenced_series: referencedSeries,
}));
