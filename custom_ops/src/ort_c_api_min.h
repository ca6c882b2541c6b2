// Our own declaration of the subset of ONNX Runtime's stable C API that the MatMulInt4 custom-op
// library uses. ONNX Runtime's headers are not distributed by the package registries we reach, so
// this file declares the ABI itself. The C API is ABI-stable and append-only: OrtApi is a table of
// function pointers whose order never changes, so we list every slot in order up to the last one
// we call (KernelContext_ParallelFor, slot 274) and give a real signature only to the slots we use;
// the others are opaque placeholders of pointer size, named after the real entries.
// The slot order was transcribed from onnxruntime's include/onnxruntime/core/session/
// onnxruntime_c_api.h (struct OrtApi). tests/test_custom_ops.py proves the layout against the
// installed onnxruntime (the CPU kernel calls the typed slots, including slot 193, on every run), and
// RegisterCustomOps checks slot 254 (GetBuildInfoString must answer "ORT Build Info...") before it
// uses slot 274 (ParallelFor); without that match the CPU kernel uses its own threads instead.
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// The API version we request from OrtGetApiBase()->GetApi(): 18 = onnxruntime 1.18, which has every
// slot we use (KernelContext_ParallelFor is the newest). The OrtCustomOp struct we fill is the
// version-17 layout: KernelComputeV2/CreateKernelV2 (errors returned as OrtStatus, since 16) and
// custom-op opset ranges (since 17); ORT reads only the fields that `version` says exist.
#define ONNXCOMP_ORT_API_VERSION 18
#define ONNXCOMP_CUSTOM_OP_VERSION 17

typedef struct OrtStatus OrtStatus;
typedef struct OrtSessionOptions OrtSessionOptions;
typedef struct OrtCustomOpDomain OrtCustomOpDomain;
typedef struct OrtValue OrtValue;
typedef struct OrtTensorTypeAndShapeInfo OrtTensorTypeAndShapeInfo;
typedef struct OrtKernelInfo OrtKernelInfo;
typedef struct OrtKernelContext OrtKernelContext;
typedef struct OrtShapeInferContext OrtShapeInferContext;
typedef struct OrtCustomOp OrtCustomOp;

typedef enum ONNXTensorElementDataType {
  ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED = 0,
  ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT = 1,
  ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 = 2,
  ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8 = 3,
  ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16 = 4,
  ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16 = 5,
  ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32 = 6,
  ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64 = 7,
  ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING = 8,
  ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL = 9,
  ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16 = 10,
  ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE = 11,
  ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32 = 12,
  ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT64 = 13,
  ONNX_TENSOR_ELEMENT_DATA_TYPE_COMPLEX64 = 14,
  ONNX_TENSOR_ELEMENT_DATA_TYPE_COMPLEX128 = 15,
  ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16 = 16
} ONNXTensorElementDataType;

typedef enum OrtErrorCode {
  ORT_OK = 0,
  ORT_FAIL = 1,
  ORT_INVALID_ARGUMENT = 2,
  ORT_NO_SUCHFILE = 3,
  ORT_NO_MODEL = 4,
  ORT_ENGINE_ERROR = 5,
  ORT_RUNTIME_EXCEPTION = 6,
  ORT_INVALID_PROTOBUF = 7,
  ORT_MODEL_LOADED = 8,
  ORT_NOT_IMPLEMENTED = 9,
  ORT_INVALID_GRAPH = 10,
  ORT_EP_FAIL = 11
} OrtErrorCode;

typedef enum OrtMemType {
  OrtMemTypeCPUInput = -2,
  OrtMemTypeCPUOutput = -1,
  OrtMemTypeDefault = 0
} OrtMemType;

typedef enum OrtCustomOpInputOutputCharacteristic {
  INPUT_OUTPUT_REQUIRED = 0,
  INPUT_OUTPUT_OPTIONAL = 1,
  INPUT_OUTPUT_VARIADIC = 2
} OrtCustomOpInputOutputCharacteristic;

typedef void (*OrtUnusedFn)(void);  // a slot we never call: only its size and position matter

typedef struct OrtApi {
  /*   0 */ OrtStatus* (*CreateStatus)(OrtErrorCode code, const char* msg);
  /*   1 */ OrtErrorCode (*GetErrorCode)(const OrtStatus* status);
  /*   2 */ const char* (*GetErrorMessage)(const OrtStatus* status);
  /*   3 */ OrtUnusedFn CreateEnv;
  /*   4 */ OrtUnusedFn CreateEnvWithCustomLogger;
  /*   5 */ OrtUnusedFn EnableTelemetryEvents;
  /*   6 */ OrtUnusedFn DisableTelemetryEvents;
  /*   7 */ OrtUnusedFn CreateSession;
  /*   8 */ OrtUnusedFn CreateSessionFromArray;
  /*   9 */ OrtUnusedFn Run;
  /*  10 */ OrtUnusedFn CreateSessionOptions;
  /*  11 */ OrtUnusedFn SetOptimizedModelFilePath;
  /*  12 */ OrtUnusedFn CloneSessionOptions;
  /*  13 */ OrtUnusedFn SetSessionExecutionMode;
  /*  14 */ OrtUnusedFn EnableProfiling;
  /*  15 */ OrtUnusedFn DisableProfiling;
  /*  16 */ OrtUnusedFn EnableMemPattern;
  /*  17 */ OrtUnusedFn DisableMemPattern;
  /*  18 */ OrtUnusedFn EnableCpuMemArena;
  /*  19 */ OrtUnusedFn DisableCpuMemArena;
  /*  20 */ OrtUnusedFn SetSessionLogId;
  /*  21 */ OrtUnusedFn SetSessionLogVerbosityLevel;
  /*  22 */ OrtUnusedFn SetSessionLogSeverityLevel;
  /*  23 */ OrtUnusedFn SetSessionGraphOptimizationLevel;
  /*  24 */ OrtUnusedFn SetIntraOpNumThreads;
  /*  25 */ OrtUnusedFn SetInterOpNumThreads;
  /*  26 */ OrtStatus* (*CreateCustomOpDomain)(const char* domain, OrtCustomOpDomain** out);
  /*  27 */ OrtStatus* (*CustomOpDomain_Add)(OrtCustomOpDomain* domain, const OrtCustomOp* op);
  /*  28 */ OrtStatus* (*AddCustomOpDomain)(OrtSessionOptions* options, OrtCustomOpDomain* domain);
  /*  29 */ OrtUnusedFn RegisterCustomOpsLibrary;
  /*  30 */ OrtUnusedFn SessionGetInputCount;
  /*  31 */ OrtUnusedFn SessionGetOutputCount;
  /*  32 */ OrtUnusedFn SessionGetOverridableInitializerCount;
  /*  33 */ OrtUnusedFn SessionGetInputTypeInfo;
  /*  34 */ OrtUnusedFn SessionGetOutputTypeInfo;
  /*  35 */ OrtUnusedFn SessionGetOverridableInitializerTypeInfo;
  /*  36 */ OrtUnusedFn SessionGetInputName;
  /*  37 */ OrtUnusedFn SessionGetOutputName;
  /*  38 */ OrtUnusedFn SessionGetOverridableInitializerName;
  /*  39 */ OrtUnusedFn CreateRunOptions;
  /*  40 */ OrtUnusedFn RunOptionsSetRunLogVerbosityLevel;
  /*  41 */ OrtUnusedFn RunOptionsSetRunLogSeverityLevel;
  /*  42 */ OrtUnusedFn RunOptionsSetRunTag;
  /*  43 */ OrtUnusedFn RunOptionsGetRunLogVerbosityLevel;
  /*  44 */ OrtUnusedFn RunOptionsGetRunLogSeverityLevel;
  /*  45 */ OrtUnusedFn RunOptionsGetRunTag;
  /*  46 */ OrtUnusedFn RunOptionsSetTerminate;
  /*  47 */ OrtUnusedFn RunOptionsUnsetTerminate;
  /*  48 */ OrtUnusedFn CreateTensorAsOrtValue;
  /*  49 */ OrtUnusedFn CreateTensorWithDataAsOrtValue;
  /*  50 */ OrtUnusedFn IsTensor;
  /*  51 */ OrtStatus* (*GetTensorMutableData)(OrtValue* value, void** out);
  /*  52 */ OrtUnusedFn FillStringTensor;
  /*  53 */ OrtUnusedFn GetStringTensorDataLength;
  /*  54 */ OrtUnusedFn GetStringTensorContent;
  /*  55 */ OrtUnusedFn CastTypeInfoToTensorInfo;
  /*  56 */ OrtUnusedFn GetOnnxTypeFromTypeInfo;
  /*  57 */ OrtUnusedFn CreateTensorTypeAndShapeInfo;
  /*  58 */ OrtUnusedFn SetTensorElementType;
  /*  59 */ OrtUnusedFn SetDimensions;
  /*  60 */ OrtStatus* (*GetTensorElementType)(const OrtTensorTypeAndShapeInfo* info, ONNXTensorElementDataType* out);
  /*  61 */ OrtStatus* (*GetDimensionsCount)(const OrtTensorTypeAndShapeInfo* info, size_t* out);
  /*  62 */ OrtStatus* (*GetDimensions)(const OrtTensorTypeAndShapeInfo* info, int64_t* dims, size_t dims_length);
  /*  63 */ OrtUnusedFn GetSymbolicDimensions;
  /*  64 */ OrtUnusedFn GetTensorShapeElementCount;
  /*  65 */ OrtStatus* (*GetTensorTypeAndShape)(const OrtValue* value, OrtTensorTypeAndShapeInfo** out);
  /*  66 */ OrtUnusedFn GetTypeInfo;
  /*  67 */ OrtUnusedFn GetValueType;
  /*  68 */ OrtUnusedFn CreateMemoryInfo;
  /*  69 */ OrtUnusedFn CreateCpuMemoryInfo;
  /*  70 */ OrtUnusedFn CompareMemoryInfo;
  /*  71 */ OrtUnusedFn MemoryInfoGetName;
  /*  72 */ OrtUnusedFn MemoryInfoGetId;
  /*  73 */ OrtUnusedFn MemoryInfoGetMemType;
  /*  74 */ OrtUnusedFn MemoryInfoGetType;
  /*  75 */ OrtUnusedFn AllocatorAlloc;
  /*  76 */ OrtUnusedFn AllocatorFree;
  /*  77 */ OrtUnusedFn AllocatorGetInfo;
  /*  78 */ OrtUnusedFn GetAllocatorWithDefaultOptions;
  /*  79 */ OrtUnusedFn AddFreeDimensionOverride;
  /*  80 */ OrtUnusedFn GetValue;
  /*  81 */ OrtUnusedFn GetValueCount;
  /*  82 */ OrtUnusedFn CreateValue;
  /*  83 */ OrtUnusedFn CreateOpaqueValue;
  /*  84 */ OrtUnusedFn GetOpaqueValue;
  /*  85 */ OrtUnusedFn KernelInfoGetAttribute_float;
  /*  86 */ OrtStatus* (*KernelInfoGetAttribute_int64)(const OrtKernelInfo* info, const char* name, int64_t* out);
  /*  87 */ OrtUnusedFn KernelInfoGetAttribute_string;
  /*  88 */ OrtStatus* (*KernelContext_GetInputCount)(const OrtKernelContext* context, size_t* out);
  /*  89 */ OrtStatus* (*KernelContext_GetOutputCount)(const OrtKernelContext* context, size_t* out);
  /*  90 */ OrtStatus* (*KernelContext_GetInput)(const OrtKernelContext* context, size_t index, const OrtValue** out);
  /*  91 */ OrtStatus* (*KernelContext_GetOutput)(OrtKernelContext* context, size_t index, const int64_t* dim_values, size_t dim_count, OrtValue** out);
  /*  92 */ OrtUnusedFn ReleaseEnv;
  /*  93 */ void (*ReleaseStatus)(OrtStatus* status);
  /*  94 */ OrtUnusedFn ReleaseMemoryInfo;
  /*  95 */ OrtUnusedFn ReleaseSession;
  /*  96 */ OrtUnusedFn ReleaseValue;
  /*  97 */ OrtUnusedFn ReleaseRunOptions;
  /*  98 */ OrtUnusedFn ReleaseTypeInfo;
  /*  99 */ void (*ReleaseTensorTypeAndShapeInfo)(OrtTensorTypeAndShapeInfo* info);
  /* 100 */ OrtUnusedFn ReleaseSessionOptions;
  /* 101 */ void (*ReleaseCustomOpDomain)(OrtCustomOpDomain* domain);
  /* 102 */ OrtUnusedFn GetDenotationFromTypeInfo;
  /* 103 */ OrtUnusedFn CastTypeInfoToMapTypeInfo;
  /* 104 */ OrtUnusedFn CastTypeInfoToSequenceTypeInfo;
  /* 105 */ OrtUnusedFn GetMapKeyType;
  /* 106 */ OrtUnusedFn GetMapValueType;
  /* 107 */ OrtUnusedFn GetSequenceElementType;
  /* 108 */ OrtUnusedFn ReleaseMapTypeInfo;
  /* 109 */ OrtUnusedFn ReleaseSequenceTypeInfo;
  /* 110 */ OrtUnusedFn SessionEndProfiling;
  /* 111 */ OrtUnusedFn SessionGetModelMetadata;
  /* 112 */ OrtUnusedFn ModelMetadataGetProducerName;
  /* 113 */ OrtUnusedFn ModelMetadataGetGraphName;
  /* 114 */ OrtUnusedFn ModelMetadataGetDomain;
  /* 115 */ OrtUnusedFn ModelMetadataGetDescription;
  /* 116 */ OrtUnusedFn ModelMetadataLookupCustomMetadataMap;
  /* 117 */ OrtUnusedFn ModelMetadataGetVersion;
  /* 118 */ OrtUnusedFn ReleaseModelMetadata;
  /* 119 */ OrtUnusedFn CreateEnvWithGlobalThreadPools;
  /* 120 */ OrtUnusedFn DisablePerSessionThreads;
  /* 121 */ OrtUnusedFn CreateThreadingOptions;
  /* 122 */ OrtUnusedFn ReleaseThreadingOptions;
  /* 123 */ OrtUnusedFn ModelMetadataGetCustomMetadataMapKeys;
  /* 124 */ OrtUnusedFn AddFreeDimensionOverrideByName;
  /* 125 */ OrtUnusedFn GetAvailableProviders;
  /* 126 */ OrtUnusedFn ReleaseAvailableProviders;
  /* 127 */ OrtUnusedFn GetStringTensorElementLength;
  /* 128 */ OrtUnusedFn GetStringTensorElement;
  /* 129 */ OrtUnusedFn FillStringTensorElement;
  /* 130 */ OrtUnusedFn AddSessionConfigEntry;
  /* 131 */ OrtUnusedFn CreateAllocator;
  /* 132 */ OrtUnusedFn ReleaseAllocator;
  /* 133 */ OrtUnusedFn RunWithBinding;
  /* 134 */ OrtUnusedFn CreateIoBinding;
  /* 135 */ OrtUnusedFn ReleaseIoBinding;
  /* 136 */ OrtUnusedFn BindInput;
  /* 137 */ OrtUnusedFn BindOutput;
  /* 138 */ OrtUnusedFn BindOutputToDevice;
  /* 139 */ OrtUnusedFn GetBoundOutputNames;
  /* 140 */ OrtUnusedFn GetBoundOutputValues;
  /* 141 */ OrtUnusedFn ClearBoundInputs;
  /* 142 */ OrtUnusedFn ClearBoundOutputs;
  /* 143 */ OrtUnusedFn TensorAt;
  /* 144 */ OrtUnusedFn CreateAndRegisterAllocator;
  /* 145 */ OrtUnusedFn SetLanguageProjection;
  /* 146 */ OrtUnusedFn SessionGetProfilingStartTimeNs;
  /* 147 */ OrtUnusedFn SetGlobalIntraOpNumThreads;
  /* 148 */ OrtUnusedFn SetGlobalInterOpNumThreads;
  /* 149 */ OrtUnusedFn SetGlobalSpinControl;
  /* 150 */ OrtUnusedFn AddInitializer;
  /* 151 */ OrtUnusedFn CreateEnvWithCustomLoggerAndGlobalThreadPools;
  /* 152 */ OrtUnusedFn SessionOptionsAppendExecutionProvider_CUDA;
  /* 153 */ OrtUnusedFn SessionOptionsAppendExecutionProvider_ROCM;
  /* 154 */ OrtUnusedFn SessionOptionsAppendExecutionProvider_OpenVINO;
  /* 155 */ OrtUnusedFn SetGlobalDenormalAsZero;
  /* 156 */ OrtUnusedFn CreateArenaCfg;
  /* 157 */ OrtUnusedFn ReleaseArenaCfg;
  /* 158 */ OrtUnusedFn ModelMetadataGetGraphDescription;
  /* 159 */ OrtUnusedFn SessionOptionsAppendExecutionProvider_TensorRT;
  /* 160 */ OrtUnusedFn SetCurrentGpuDeviceId;
  /* 161 */ OrtUnusedFn GetCurrentGpuDeviceId;
  /* 162 */ OrtUnusedFn KernelInfoGetAttributeArray_float;
  /* 163 */ OrtUnusedFn KernelInfoGetAttributeArray_int64;
  /* 164 */ OrtUnusedFn CreateArenaCfgV2;
  /* 165 */ OrtUnusedFn AddRunConfigEntry;
  /* 166 */ OrtUnusedFn CreatePrepackedWeightsContainer;
  /* 167 */ OrtUnusedFn ReleasePrepackedWeightsContainer;
  /* 168 */ OrtUnusedFn CreateSessionWithPrepackedWeightsContainer;
  /* 169 */ OrtUnusedFn CreateSessionFromArrayWithPrepackedWeightsContainer;
  /* 170 */ OrtUnusedFn SessionOptionsAppendExecutionProvider_TensorRT_V2;
  /* 171 */ OrtUnusedFn CreateTensorRTProviderOptions;
  /* 172 */ OrtUnusedFn UpdateTensorRTProviderOptions;
  /* 173 */ OrtUnusedFn GetTensorRTProviderOptionsAsString;
  /* 174 */ OrtUnusedFn ReleaseTensorRTProviderOptions;
  /* 175 */ OrtUnusedFn EnableOrtCustomOps;
  /* 176 */ OrtUnusedFn RegisterAllocator;
  /* 177 */ OrtUnusedFn UnregisterAllocator;
  /* 178 */ OrtUnusedFn IsSparseTensor;
  /* 179 */ OrtUnusedFn CreateSparseTensorAsOrtValue;
  /* 180 */ OrtUnusedFn FillSparseTensorCoo;
  /* 181 */ OrtUnusedFn FillSparseTensorCsr;
  /* 182 */ OrtUnusedFn FillSparseTensorBlockSparse;
  /* 183 */ OrtUnusedFn CreateSparseTensorWithValuesAsOrtValue;
  /* 184 */ OrtUnusedFn UseCooIndices;
  /* 185 */ OrtUnusedFn UseCsrIndices;
  /* 186 */ OrtUnusedFn UseBlockSparseIndices;
  /* 187 */ OrtUnusedFn GetSparseTensorFormat;
  /* 188 */ OrtUnusedFn GetSparseTensorValuesTypeAndShape;
  /* 189 */ OrtUnusedFn GetSparseTensorValues;
  /* 190 */ OrtUnusedFn GetSparseTensorIndicesTypeShape;
  /* 191 */ OrtUnusedFn GetSparseTensorIndices;
  /* 192 */ OrtUnusedFn HasValue;
  /* 193 */ OrtStatus* (*KernelContext_GetGPUComputeStream)(const OrtKernelContext* context, void** out);
  /* 194 */ OrtUnusedFn GetTensorMemoryInfo;
  /* 195 */ OrtUnusedFn GetExecutionProviderApi;
  /* 196 */ OrtUnusedFn SessionOptionsSetCustomCreateThreadFn;
  /* 197 */ OrtUnusedFn SessionOptionsSetCustomThreadCreationOptions;
  /* 198 */ OrtUnusedFn SessionOptionsSetCustomJoinThreadFn;
  /* 199 */ OrtUnusedFn SetGlobalCustomCreateThreadFn;
  /* 200 */ OrtUnusedFn SetGlobalCustomThreadCreationOptions;
  /* 201 */ OrtUnusedFn SetGlobalCustomJoinThreadFn;
  /* 202 */ OrtUnusedFn SynchronizeBoundInputs;
  /* 203 */ OrtUnusedFn SynchronizeBoundOutputs;
  /* 204 */ OrtUnusedFn SessionOptionsAppendExecutionProvider_CUDA_V2;
  /* 205 */ OrtUnusedFn CreateCUDAProviderOptions;
  /* 206 */ OrtUnusedFn UpdateCUDAProviderOptions;
  /* 207 */ OrtUnusedFn GetCUDAProviderOptionsAsString;
  /* 208 */ OrtUnusedFn ReleaseCUDAProviderOptions;
  /* 209 */ OrtUnusedFn SessionOptionsAppendExecutionProvider_MIGraphX;
  /* 210 */ OrtUnusedFn AddExternalInitializers;
  /* 211 */ OrtUnusedFn CreateOpAttr;
  /* 212 */ OrtUnusedFn ReleaseOpAttr;
  /* 213 */ OrtUnusedFn CreateOp;
  /* 214 */ OrtUnusedFn InvokeOp;
  /* 215 */ OrtUnusedFn ReleaseOp;
  /* 216 */ OrtUnusedFn SessionOptionsAppendExecutionProvider;
  /* 217 */ OrtUnusedFn CopyKernelInfo;
  /* 218 */ OrtUnusedFn ReleaseKernelInfo;
  /* 219 */ OrtUnusedFn GetTrainingApi;
  /* 220 */ OrtUnusedFn SessionOptionsAppendExecutionProvider_CANN;
  /* 221 */ OrtUnusedFn CreateCANNProviderOptions;
  /* 222 */ OrtUnusedFn UpdateCANNProviderOptions;
  /* 223 */ OrtUnusedFn GetCANNProviderOptionsAsString;
  /* 224 */ OrtUnusedFn ReleaseCANNProviderOptions;
  /* 225 */ OrtUnusedFn MemoryInfoGetDeviceType;
  /* 226 */ OrtUnusedFn UpdateEnvWithCustomLogLevel;
  /* 227 */ OrtUnusedFn SetGlobalIntraOpThreadAffinity;
  /* 228 */ OrtUnusedFn RegisterCustomOpsLibrary_V2;
  /* 229 */ OrtUnusedFn RegisterCustomOpsUsingFunction;
  /* 230 */ OrtUnusedFn KernelInfo_GetInputCount;
  /* 231 */ OrtUnusedFn KernelInfo_GetOutputCount;
  /* 232 */ OrtUnusedFn KernelInfo_GetInputName;
  /* 233 */ OrtUnusedFn KernelInfo_GetOutputName;
  /* 234 */ OrtUnusedFn KernelInfo_GetInputTypeInfo;
  /* 235 */ OrtUnusedFn KernelInfo_GetOutputTypeInfo;
  /* 236 */ OrtUnusedFn KernelInfoGetAttribute_tensor;
  /* 237 */ OrtUnusedFn HasSessionConfigEntry;
  /* 238 */ OrtUnusedFn GetSessionConfigEntry;
  /* 239 */ OrtUnusedFn SessionOptionsAppendExecutionProvider_Dnnl;
  /* 240 */ OrtUnusedFn CreateDnnlProviderOptions;
  /* 241 */ OrtUnusedFn UpdateDnnlProviderOptions;
  /* 242 */ OrtUnusedFn GetDnnlProviderOptionsAsString;
  /* 243 */ OrtUnusedFn ReleaseDnnlProviderOptions;
  /* 244 */ OrtUnusedFn KernelInfo_GetNodeName;
  /* 245 */ OrtUnusedFn KernelInfo_GetLogger;
  /* 246 */ OrtUnusedFn KernelContext_GetLogger;
  /* 247 */ OrtUnusedFn Logger_LogMessage;
  /* 248 */ OrtUnusedFn Logger_GetLoggingSeverityLevel;
  /* 249 */ OrtUnusedFn KernelInfoGetConstantInput_tensor;
  /* 250 */ OrtUnusedFn CastTypeInfoToOptionalTypeInfo;
  /* 251 */ OrtUnusedFn GetOptionalContainedTypeInfo;
  /* 252 */ OrtUnusedFn GetResizedStringTensorElementBuffer;
  /* 253 */ OrtUnusedFn KernelContext_GetAllocator;
  /* 254 */ const char* (*GetBuildInfoString)(void);
  /* 255 */ OrtUnusedFn CreateROCMProviderOptions;
  /* 256 */ OrtUnusedFn UpdateROCMProviderOptions;
  /* 257 */ OrtUnusedFn GetROCMProviderOptionsAsString;
  /* 258 */ OrtUnusedFn ReleaseROCMProviderOptions;
  /* 259 */ OrtUnusedFn CreateAndRegisterAllocatorV2;
  /* 260 */ OrtUnusedFn RunAsync;
  /* 261 */ OrtUnusedFn UpdateTensorRTProviderOptionsWithValue;
  /* 262 */ OrtUnusedFn GetTensorRTProviderOptionsByName;
  /* 263 */ OrtUnusedFn UpdateCUDAProviderOptionsWithValue;
  /* 264 */ OrtUnusedFn GetCUDAProviderOptionsByName;
  /* 265 */ OrtUnusedFn KernelContext_GetResource;
  /* 266 */ OrtUnusedFn SetUserLoggingFunction;
  /* 267 */ OrtUnusedFn ShapeInferContext_GetInputCount;
  /* 268 */ OrtUnusedFn ShapeInferContext_GetInputTypeShape;
  /* 269 */ OrtUnusedFn ShapeInferContext_GetAttribute;
  /* 270 */ OrtUnusedFn ShapeInferContext_SetOutputTypeShape;
  /* 271 */ OrtUnusedFn SetSymbolicDimensions;
  /* 272 */ OrtUnusedFn ReadOpAttr;
  /* 273 */ OrtUnusedFn SetDeterministicCompute;
  /* 274 */ OrtStatus* (*KernelContext_ParallelFor)(const OrtKernelContext* context, void (*fn)(void* usr_data, size_t index), size_t total, size_t num_batch, void* usr_data);
} OrtApi;

typedef struct OrtApiBase {
  const OrtApi* (*GetApi)(uint32_t version);  // NULL if the runtime does not support `version`
  const char* (*GetVersionString)(void);
} OrtApiBase;

// The custom-op description ONNX Runtime reads. `version` says how many fields it may read:
// fields up to GetVariadicOutputHomogeneity exist since 14, CreateKernelV2/KernelComputeV2 since 16,
// InferOutputShapeFn/GetStartVersion/GetEndVersion since 17. We set version = 17
// (ONNXCOMP_CUSTOM_OP_VERSION) and provide exactly those fields.
typedef struct OrtCustomOp {
  uint32_t version;
  void* (*CreateKernel)(const struct OrtCustomOp* op, const OrtApi* api, const OrtKernelInfo* info);
  const char* (*GetName)(const struct OrtCustomOp* op);
  const char* (*GetExecutionProviderType)(const struct OrtCustomOp* op);
  ONNXTensorElementDataType (*GetInputType)(const struct OrtCustomOp* op, size_t index);
  size_t (*GetInputTypeCount)(const struct OrtCustomOp* op);
  ONNXTensorElementDataType (*GetOutputType)(const struct OrtCustomOp* op, size_t index);
  size_t (*GetOutputTypeCount)(const struct OrtCustomOp* op);
  void (*KernelCompute)(void* op_kernel, OrtKernelContext* context);
  void (*KernelDestroy)(void* op_kernel);
  OrtCustomOpInputOutputCharacteristic (*GetInputCharacteristic)(const struct OrtCustomOp* op, size_t index);
  OrtCustomOpInputOutputCharacteristic (*GetOutputCharacteristic)(const struct OrtCustomOp* op, size_t index);
  OrtMemType (*GetInputMemoryType)(const struct OrtCustomOp* op, size_t index);
  int (*GetVariadicInputMinArity)(const struct OrtCustomOp* op);
  int (*GetVariadicInputHomogeneity)(const struct OrtCustomOp* op);
  int (*GetVariadicOutputMinArity)(const struct OrtCustomOp* op);
  int (*GetVariadicOutputHomogeneity)(const struct OrtCustomOp* op);
  OrtStatus* (*CreateKernelV2)(const struct OrtCustomOp* op, const OrtApi* api, const OrtKernelInfo* info, void** kernel);
  OrtStatus* (*KernelComputeV2)(void* op_kernel, OrtKernelContext* context);
  OrtStatus* (*InferOutputShapeFn)(const struct OrtCustomOp* op, OrtShapeInferContext* ctx);
  int (*GetStartVersion)(const struct OrtCustomOp* op);
  int (*GetEndVersion)(const struct OrtCustomOp* op);
} OrtCustomOp;

#ifdef __cplusplus
}  // extern "C"
static_assert(offsetof(OrtApi, KernelContext_GetGPUComputeStream) == 193 * sizeof(void*),
              "OrtApi slot order: KernelContext_GetGPUComputeStream must be slot 193");
static_assert(offsetof(OrtApi, KernelContext_GetOutput) == 91 * sizeof(void*), "OrtApi slot 91");
static_assert(offsetof(OrtApi, GetBuildInfoString) == 254 * sizeof(void*), "OrtApi slot 254");
static_assert(offsetof(OrtApi, KernelContext_ParallelFor) == 274 * sizeof(void*), "OrtApi slot 274");
#endif
