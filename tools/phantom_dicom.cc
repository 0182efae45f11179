#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dctk.h>

#include <cmath>
#include <cstdio>

#include "imageio/dcmtk_io.h"
#include "tools/phantom.h"

namespace upp::tools {

std::vector<int16_t> ToInt16(const std::vector<float>& hu) {
  std::vector<int16_t> out(hu.size());
  for (size_t i = 0; i < hu.size(); ++i)
    out[i] = static_cast<int16_t>(std::lround(std::clamp(hu[i], -32768.0f, 32767.0f)));
  return out;
}

std::vector<std::string> WriteCtSeries(const imageio::Geometry& g, const std::vector<int16_t>& hu, uint64_t seed) {
  char study[100], series[100], frame[100];
  dcmGenerateUniqueIdentifier(study, SITE_STUDY_UID_ROOT);
  dcmGenerateUniqueIdentifier(series, SITE_SERIES_UID_ROOT);
  dcmGenerateUniqueIdentifier(frame, SITE_INSTANCE_UID_ROOT);
  const std::string patient_id = "PHANTOM-" + std::to_string(seed);
  char orientation[128], spacing[64], thickness[32];
  std::snprintf(orientation, sizeof(orientation), "%.6f\\%.6f\\%.6f\\%.6f\\%.6f\\%.6f", g.Direction(0, 0),
                g.Direction(1, 0), g.Direction(2, 0), g.Direction(0, 1), g.Direction(1, 1), g.Direction(2, 1));
  // PixelSpacing is row spacing (y) \ column spacing (x).
  std::snprintf(spacing, sizeof(spacing), "%.6f\\%.6f", g.spacing[1], g.spacing[0]);
  std::snprintf(thickness, sizeof(thickness), "%.6f", g.spacing[2]);
  const int64_t plane = g.size[0] * g.size[1];
  std::vector<std::string> files;
  for (int64_t z = 0; z < g.size[2]; ++z) {
    DcmFileFormat file;
    DcmDataset* d = file.getDataset();
    char sop[100], position[128];
    dcmGenerateUniqueIdentifier(sop, SITE_INSTANCE_UID_ROOT);
    const auto p = g.IndexToPhysical({0.0, 0.0, static_cast<double>(z)});
    std::snprintf(position, sizeof(position), "%.6f\\%.6f\\%.6f", p[0], p[1], p[2]);
    d->putAndInsertString(DCM_SOPClassUID, UID_CTImageStorage);
    d->putAndInsertString(DCM_SOPInstanceUID, sop);
    d->putAndInsertString(DCM_StudyInstanceUID, study);
    d->putAndInsertString(DCM_SeriesInstanceUID, series);
    d->putAndInsertString(DCM_FrameOfReferenceUID, frame);
    d->putAndInsertString(DCM_PatientName, "PHANTOM^SYNTHETIC");
    d->putAndInsertString(DCM_PatientID, patient_id.c_str());
    d->putAndInsertString(DCM_PatientBirthDate, "");
    d->putAndInsertString(DCM_PatientSex, "O");
    d->putAndInsertString(DCM_StudyDate, "20000101");  // fixed, obviously synthetic
    d->putAndInsertString(DCM_StudyTime, "000000");
    d->putAndInsertString(DCM_StudyID, "1");
    d->putAndInsertString(DCM_AccessionNumber, "");
    d->putAndInsertString(DCM_ReferringPhysicianName, "");
    d->putAndInsertString(DCM_Modality, "CT");
    d->putAndInsertString(DCM_Manufacturer, "unetrpp-serve phantom generator");
    d->putAndInsertString(DCM_SeriesNumber, "1");
    d->putAndInsertString(DCM_SeriesDescription, "synthetic abdominal CT phantom");
    d->putAndInsertString(DCM_BodyPartExamined, "ABDOMEN");
    d->putAndInsertString(DCM_PatientPosition, "HFS");
    d->putAndInsertString(DCM_InstanceNumber, std::to_string(z + 1).c_str());
    d->putAndInsertString(DCM_ImageType, "DERIVED\\SECONDARY\\AXIAL");
    d->putAndInsertString(DCM_ImagePositionPatient, position);
    d->putAndInsertString(DCM_ImageOrientationPatient, orientation);
    d->putAndInsertString(DCM_PixelSpacing, spacing);
    d->putAndInsertString(DCM_SliceThickness, thickness);
    d->putAndInsertString(DCM_KVP, "120");
    d->putAndInsertString(DCM_PositionReferenceIndicator, "");
    d->putAndInsertString(DCM_AcquisitionNumber, "1");
    d->putAndInsertString(DCM_PhotometricInterpretation, "MONOCHROME2");
    d->putAndInsertUint16(DCM_SamplesPerPixel, 1);
    d->putAndInsertUint16(DCM_Rows, static_cast<Uint16>(g.size[1]));
    d->putAndInsertUint16(DCM_Columns, static_cast<Uint16>(g.size[0]));
    d->putAndInsertUint16(DCM_BitsAllocated, 16);
    d->putAndInsertUint16(DCM_BitsStored, 16);
    d->putAndInsertUint16(DCM_HighBit, 15);
    d->putAndInsertUint16(DCM_PixelRepresentation, 1);
    d->putAndInsertString(DCM_RescaleIntercept, "0");
    d->putAndInsertString(DCM_RescaleSlope, "1");
    d->putAndInsertString(DCM_RescaleType, "HU");
    d->putAndInsertString(DCM_WindowCenter, "40");
    d->putAndInsertString(DCM_WindowWidth, "400");
    d->putAndInsertUint16Array(DCM_PixelData, reinterpret_cast<const Uint16*>(hu.data() + z * plane),
                               static_cast<unsigned long>(plane));
    auto bytes = imageio::SerializeDicom(file);
    if (!bytes.ok()) return {};
    files.push_back(std::move(*bytes));
  }
  return files;
}

}  // namespace upp::tools
