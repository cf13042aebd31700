// The printable names of the core's enums (dtypes, ops, collectives, algorithms) and
// the conversions from codes and names: the one table each, which the bindings
// hand to the Python layer.

#include "collex/common/collective.h"
#include "collex/common/dtype.h"
#include "collex/common/reduce_op.h"

namespace collex {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::kFloat16: return "float16";
    case DType::kBFloat16: return "bfloat16";
    case DType::kFloat32: return "float32";
    case DType::kFloat64: return "float64";
    case DType::kInt8: return "int8";
    case DType::kUInt8: return "uint8";
    case DType::kInt32: return "int32";
    case DType::kInt64: return "int64";
  }
  return "?";
}

bool dtype_from_int(int code, DType* out) {
  if (code < 0 || code >= kNumDTypes) return false;
  *out = static_cast<DType>(code);
  return true;
}

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return "sum";
    case ReduceOp::kProd: return "prod";
    case ReduceOp::kMin: return "min";
    case ReduceOp::kMax: return "max";
    case ReduceOp::kAvg: return "avg";
  }
  return "?";
}

bool reduce_op_from_int(int code, ReduceOp* out) {
  if (code < 0 || code > static_cast<int>(ReduceOp::kAvg)) return false;
  *out = static_cast<ReduceOp>(code);
  return true;
}

const char* algo_name(Algo a) {
  switch (a) {
    case Algo::kAuto: return "auto";
    case Algo::kRing: return "ring";
    case Algo::kTree: return "tree";
    case Algo::kDirect: return "direct";
    case Algo::kHier: return "hier";
    case Algo::kDissemination: return "dissemination";
  }
  return "?";
}

const char* collective_name(Collective c) {
  switch (c) {
    case Collective::kAllreduce: return "allreduce";
    case Collective::kBroadcast: return "broadcast";
    case Collective::kReduce: return "reduce";
    case Collective::kAllgather: return "allgather";
    case Collective::kReduceScatter: return "reduce_scatter";
    case Collective::kBarrier: return "barrier";
    case Collective::kSend: return "send";
    case Collective::kRecv: return "recv";
    case Collective::kAllocate: return "empty";
    case Collective::kSplit: return "split";
  }
  return "?";
}

bool algo_from_string(const std::string& s, Algo* out) {
  for (Algo a : kNamedAlgos) {
    if (s == algo_name(a)) {
      *out = a;
      return true;
    }
  }
  return false;
}

}  // namespace collex
