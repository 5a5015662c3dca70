// pybind11 bindings of the C++ core: dqnfast._core. The only file that
// includes pybind11. Arguments are checked and converted with the GIL held;
// the ring's work runs with the GIL released. dqnfast.replay.ReplayRing
// (dqnfast/replay/ring.py) is the public face: dtype/shape checks with friendly
// messages, torch buffers, save/load.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "replay_ring.h"

namespace py = pybind11;
using dqnfast::BatchOut;
using dqnfast::ReplayRing;
using dqnfast::RingConfig;

namespace {

template <typename T>
using CArray = py::array_t<T, py::array::c_style>;

void CheckLen(const py::buffer_info& info, int64_t n, const char* name) {
  if (info.ndim != 1 || info.shape[0] != n) {
    throw std::invalid_argument(std::string(name) + " must have shape [" + std::to_string(n) + "]");
  }
}

// The bytes of one element of info's dimensions [first, ndim), which must lie
// C-contiguously (each stride the size of what follows it); throws naming
// `what` otherwise. first 0: the whole buffer; 1: each row of it.
int64_t ContiguousBytes(const py::buffer_info& info, int first, const std::string& what) {
  int64_t bytes = info.itemsize;
  for (int d = info.ndim - 1; d >= first; --d) {
    if (info.strides[d] != bytes) throw std::invalid_argument(what + " must be C-contiguous");
    bytes *= info.shape[d];
  }
  return bytes;
}

void CheckBytes(int64_t got, int64_t expect, const std::string& what) {
  if (got != expect) {
    throw std::invalid_argument(what + " must hold " + std::to_string(expect) + " bytes, got " +
                                std::to_string(got));
  }
}

// A writable C-contiguous buffer of exactly `bytes` bytes.
uint8_t* RawOut(py::buffer buf, int64_t bytes, const char* name) {
  py::buffer_info info = buf.request(/*writable=*/true);
  CheckBytes(ContiguousBytes(info, 0, name), bytes, name);
  return static_cast<uint8_t*>(info.ptr);
}

struct Outs {
  BatchOut out;
  int64_t batch = 0;
};

// The per-row outputs besides frames, shared by both kinds of batch; sets o.batch from
// action. weight None: no importance weights (a uniform ring's batches carry none).
Outs MetaOuts(CArray<int64_t> action, CArray<float> reward, CArray<float> discount,
              CArray<int64_t> index, CArray<int64_t> generation, py::object weight, double beta) {
  Outs o;
  auto ai = action.request(true);
  o.batch = ai.ndim == 1 ? ai.shape[0] : -1;
  if (o.batch < 0) throw std::invalid_argument("action must be 1-D");
  auto ri = reward.request(true);
  auto di = discount.request(true);
  auto ii = index.request(true);
  CheckLen(ri, o.batch, "reward");
  CheckLen(di, o.batch, "discount");
  CheckLen(ii, o.batch, "index");
  o.out.action = static_cast<int64_t*>(ai.ptr);
  o.out.reward = static_cast<float*>(ri.ptr);
  o.out.discount = static_cast<float*>(di.ptr);
  o.out.index = static_cast<int64_t*>(ii.ptr);
  auto gi = generation.request(true);
  CheckLen(gi, o.batch, "generation");
  o.out.generation = static_cast<int64_t*>(gi.ptr);
  if (!weight.is_none()) {
    // checked before the cast, which would otherwise convert into a temporary copy
    if (!py::isinstance<CArray<float>>(weight)) {
      throw std::invalid_argument("weight must be a C-contiguous float32 array");
    }
    auto wi = weight.cast<CArray<float>>().request(true);
    CheckLen(wi, o.batch, "weight");
    o.out.weight = static_cast<float*>(wi.ptr);
  }
  if (!(beta >= 0.0 && beta <= 1.0)) throw std::invalid_argument("beta must be in [0, 1]");
  o.out.beta = beta;
  return o;
}

// next_obs None: shared rows (obs holds stack + 1 frames per row; see BatchOut).
Outs MakeOuts(const ReplayRing& ring, py::buffer obs, py::object next_obs, CArray<int64_t> action,
              CArray<float> reward, CArray<float> discount, CArray<int64_t> index,
              CArray<int64_t> generation, py::object weight, double beta) {
  Outs o = MetaOuts(action, reward, discount, index, generation, weight, beta);
  const int64_t row = ring.config().stack * ring.config().frame_bytes;
  if (next_obs.is_none()) {
    o.out.obs = RawOut(obs, o.batch * (row + ring.config().frame_bytes),
                       "obs (shared rows: stack + 1 frames)");
    o.out.shared = true;
  } else {
    o.out.obs = RawOut(obs, o.batch * row, "obs");
    o.out.next_obs = RawOut(next_obs.cast<py::buffer>(), o.batch * row, "next_obs");
  }
  return o;
}

// Frame slots instead of frames: frame_slots int64[B, stack + 1] (shared) or [B, 2 * stack].
Outs MakeSlotOuts(const ReplayRing& ring, CArray<int64_t> frame_slots, bool shared,
                  CArray<int64_t> action, CArray<float> reward, CArray<float> discount,
                  CArray<int64_t> index, CArray<int64_t> generation, py::object weight,
                  double beta) {
  Outs o = MetaOuts(action, reward, discount, index, generation, weight, beta);
  o.out.shared = shared;
  const int width = o.out.RowFrames(ring.config().stack);
  auto si = frame_slots.request(true);
  if (si.ndim != 2 || si.shape[0] != o.batch || si.shape[1] != width) {
    throw std::invalid_argument("frame_slots must have shape [" + std::to_string(o.batch) + ", " +
                                std::to_string(width) + "]");
  }
  o.out.frame_slots = static_cast<int64_t*>(si.ptr);
  return o;
}

// Samples into o (indices null) or gathers the given indices into it, with the GIL released.
void Fill(ReplayRing& r, const Outs& o, const CArray<int64_t>* indices) {
  const int64_t* idx = nullptr;
  if (indices != nullptr) {
    auto ii = indices->request();
    CheckLen(ii, o.batch, "indices");
    idx = static_cast<const int64_t*>(ii.ptr);
  }
  py::gil_scoped_release release;
  if (idx != nullptr) {
    r.Gather(o.batch, idx, o.out);
  } else {
    r.Sample(o.batch, o.out);
  }
}

// One of the ring's raw arrays, as save/load names it.
struct RawArray {
  const char* name;
  ReplayRing::Raw which;
  py::dtype dtype;
  std::vector<int64_t> shape;
  const void* data;
};

// The raw arrays this ring keeps: frames unless store_frames is off, priorities
// only when prioritized.
std::vector<RawArray> RawArrays(const ReplayRing& r) {
  using Raw = ReplayRing::Raw;
  const int64_t ne = r.config().num_envs, seg = r.segment_capacity();
  std::vector<RawArray> out;
  if (r.frames() != nullptr) {
    out.push_back({"frames",
                   Raw::kFrames,
                   py::dtype::of<uint8_t>(),
                   {ne, seg, r.config().frame_bytes},
                   r.frames()});
  }
  out.push_back({"actions", Raw::kActions, py::dtype::of<int32_t>(), {ne, seg}, r.actions()});
  out.push_back({"rewards", Raw::kRewards, py::dtype::of<float>(), {ne, seg}, r.rewards()});
  out.push_back({"flags", Raw::kFlags, py::dtype::of<uint8_t>(), {ne, seg}, r.flags()});
  out.push_back({"cursors", Raw::kCursors, py::dtype::of<int64_t>(), {ne}, r.cursors()});
  if (r.priorities() != nullptr) {
    out.push_back(
        {"priorities", Raw::kPriorities, py::dtype::of<double>(), {ne, seg}, r.priorities()});
  }
  return out;
}

// "uint8[3, 16, 7056]"
std::string Describe(const py::dtype& dtype, const std::vector<int64_t>& shape) {
  std::string s = std::string(py::str(dtype)) + "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// Copies src over the raw array `name` (dtype and shape exactly the array's, or
// for frames the first slots of each env's segment), with the GIL released; the
// caller rebuilds the index after the last one.
void Restore(ReplayRing& r, const std::string& name, const py::array& src) {
  const std::vector<RawArray> arrays = RawArrays(r);
  auto it =
      std::find_if(arrays.begin(), arrays.end(), [&](const RawArray& a) { return name == a.name; });
  if (it == arrays.end()) {
    std::string kept;
    for (const RawArray& a : arrays) kept += (kept.empty() ? "" : ", ") + std::string(a.name);
    throw std::invalid_argument("this ring keeps no array " + name + " (it keeps " + kept + ")");
  }
  const std::vector<int64_t> shape(src.shape(), src.shape() + src.ndim());
  // frames may hold the first slots of each env's segment only (a ring saved before it was full)
  const bool frame_prefix = it->which == ReplayRing::Raw::kFrames && shape.size() == 3 &&
                            shape[0] == it->shape[0] && shape[2] == it->shape[2] && shape[1] >= 0 &&
                            shape[1] < it->shape[1];
  if (!src.dtype().equal(it->dtype) || (shape != it->shape && !frame_prefix)) {
    throw std::invalid_argument(name + " must be " + Describe(it->dtype, it->shape) + ", got " +
                                Describe(src.dtype(), shape));
  }
  const py::array c = py::array::ensure(src, py::array::c_style);  // a copy only if strided
  if (!c) throw py::error_already_set();
  const void* data = c.data();
  const int64_t bytes = c.nbytes();
  py::gil_scoped_release release;
  if (frame_prefix) {
    r.RestoreFrames(data, shape[1]);
  } else {
    r.Restore(it->which, data, bytes);
  }
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "dqnfast C++ core: the replay ring (see dqnfast.replay for the public API)";

  m.def("bytes_per_slot", &ReplayRing::BytesPerSlot, py::arg("frame_bytes"),
        py::arg("prioritized") = false,
        "Bytes one slot costs at most: frame + action + reward + flags + sampler.");

  py::class_<ReplayRing>(m, "_ReplayRing")
      .def(py::init([](int64_t capacity, int num_envs, int64_t frame_bytes, int stack, int n_step,
                       double gamma, uint64_t seed, int num_threads, bool store_frames,
                       int64_t num_actions, bool prioritized, double alpha, double priority_eps) {
             RingConfig c;
             c.capacity = capacity;
             c.num_envs = num_envs;
             c.frame_bytes = frame_bytes;
             c.stack = stack;
             c.n_step = n_step;
             c.gamma = gamma;
             c.seed = seed;
             c.num_threads = num_threads;
             c.store_frames = store_frames;
             c.num_actions = num_actions;
             c.prioritized = prioritized;
             c.alpha = alpha;
             c.priority_eps = priority_eps;
             return std::make_unique<ReplayRing>(c);
           }),
           py::arg("capacity"), py::arg("num_envs"), py::arg("frame_bytes"), py::arg("stack"),
           py::arg("n_step"), py::arg("gamma"), py::arg("seed"), py::arg("num_threads"),
           py::arg("store_frames") = true, py::arg("num_actions") = 0,
           py::arg("prioritized") = false, py::arg("alpha") = 0.6, py::arg("priority_eps") = 1e-6)
      .def(
          "_add",
          [](ReplayRing& r, CArray<int64_t> env_ids, py::buffer frames, CArray<int64_t> actions,
             CArray<float> rewards, CArray<bool> terminated, CArray<bool> truncated,
             CArray<bool> first) {
            auto ei = env_ids.request();
            if (ei.ndim != 1) throw std::invalid_argument("env_ids must be 1-D");
            const int64_t k = ei.shape[0];
            py::buffer_info fi = frames.request();
            if (fi.ndim < 1 || fi.shape[0] != k) {
              throw std::invalid_argument("frames must have one row per env id");
            }
            const int64_t frame = ContiguousBytes(fi, 1, "each frame");
            CheckBytes(frame, r.config().frame_bytes, "each frame");
            auto ai = actions.request();
            auto ri = rewards.request();
            auto ti = terminated.request();
            auto ui = truncated.request();
            auto si = first.request();
            CheckLen(ai, k, "actions");
            CheckLen(ri, k, "rewards");
            CheckLen(ti, k, "terminated");
            CheckLen(ui, k, "truncated");
            CheckLen(si, k, "first");
            const int64_t stride = k > 1 ? fi.strides[0] : frame;
            CArray<int64_t> slots(k);
            int64_t* slots_ptr = slots.mutable_data();
            {
              py::gil_scoped_release release;
              r.Add(k, static_cast<const int64_t*>(ei.ptr), static_cast<const uint8_t*>(fi.ptr),
                    stride, static_cast<const int64_t*>(ai.ptr), static_cast<const float*>(ri.ptr),
                    static_cast<const uint8_t*>(ti.ptr), static_cast<const uint8_t*>(ui.ptr),
                    static_cast<const uint8_t*>(si.ptr), slots_ptr);
            }
            return slots;
          },
          py::arg("env_ids").noconvert(), py::arg("frames"), py::arg("actions").noconvert(),
          py::arg("rewards").noconvert(), py::arg("terminated").noconvert(),
          py::arg("truncated").noconvert(), py::arg("first").noconvert(),
          "Appends one step per env; returns int64[K]: the slot each step was written to.")
      .def(
          "_sample",
          [](ReplayRing& r, py::buffer obs, py::object next_obs, CArray<int64_t> action,
             CArray<float> reward, CArray<float> discount, CArray<int64_t> index,
             CArray<int64_t> generation, py::object weight, double beta) {
            Fill(r,
                 MakeOuts(r, obs, next_obs, action, reward, discount, index, generation, weight,
                          beta),
                 nullptr);
          },
          py::arg("obs"), py::arg("next_obs").none(true), py::arg("action").noconvert(),
          py::arg("reward").noconvert(), py::arg("discount").noconvert(),
          py::arg("index").noconvert(), py::arg("generation").noconvert(),
          py::arg("weight").none(true), py::arg("beta") = 1.0)
      .def(
          "_gather",
          [](ReplayRing& r, CArray<int64_t> indices, py::buffer obs, py::object next_obs,
             CArray<int64_t> action, CArray<float> reward, CArray<float> discount,
             CArray<int64_t> index, CArray<int64_t> generation, py::object weight, double beta) {
            Fill(r,
                 MakeOuts(r, obs, next_obs, action, reward, discount, index, generation, weight,
                          beta),
                 &indices);
          },
          py::arg("indices").noconvert(), py::arg("obs"), py::arg("next_obs").none(true),
          py::arg("action").noconvert(), py::arg("reward").noconvert(),
          py::arg("discount").noconvert(), py::arg("index").noconvert(),
          py::arg("generation").noconvert(), py::arg("weight").none(true), py::arg("beta") = 1.0)
      .def(
          "_sample_slots",
          [](ReplayRing& r, CArray<int64_t> frame_slots, bool shared, CArray<int64_t> action,
             CArray<float> reward, CArray<float> discount, CArray<int64_t> index,
             CArray<int64_t> generation, py::object weight, double beta) {
            Fill(r,
                 MakeSlotOuts(r, frame_slots, shared, action, reward, discount, index, generation,
                              weight, beta),
                 nullptr);
          },
          py::arg("frame_slots").noconvert(), py::arg("shared"), py::arg("action").noconvert(),
          py::arg("reward").noconvert(), py::arg("discount").noconvert(),
          py::arg("index").noconvert(), py::arg("generation").noconvert(),
          py::arg("weight").none(true), py::arg("beta") = 1.0)
      .def(
          "_gather_slots",
          [](ReplayRing& r, CArray<int64_t> indices, CArray<int64_t> frame_slots, bool shared,
             CArray<int64_t> action, CArray<float> reward, CArray<float> discount,
             CArray<int64_t> index, CArray<int64_t> generation, py::object weight, double beta) {
            Fill(r,
                 MakeSlotOuts(r, frame_slots, shared, action, reward, discount, index, generation,
                              weight, beta),
                 &indices);
          },
          py::arg("indices").noconvert(), py::arg("frame_slots").noconvert(), py::arg("shared"),
          py::arg("action").noconvert(), py::arg("reward").noconvert(),
          py::arg("discount").noconvert(), py::arg("index").noconvert(),
          py::arg("generation").noconvert(), py::arg("weight").none(true), py::arg("beta") = 1.0)
      .def(
          "_update_priorities",
          [](ReplayRing& r, CArray<int64_t> indices, CArray<int64_t> generations,
             CArray<float> priorities) {
            auto ii = indices.request();
            if (ii.ndim != 1) throw std::invalid_argument("indices must be 1-D");
            const int64_t n = ii.shape[0];
            auto gi = generations.request();
            auto pi = priorities.request();
            CheckLen(gi, n, "generations");
            CheckLen(pi, n, "priorities");
            py::gil_scoped_release release;
            return r.UpdatePriorities(n, static_cast<const int64_t*>(ii.ptr),
                                      static_cast<const int64_t*>(gi.ptr),
                                      static_cast<const float*>(pi.ptr));
          },
          py::arg("indices").noconvert(), py::arg("generations").noconvert(),
          py::arg("priorities").noconvert(),
          "Reports |TD error| per drawn index; returns how many were not stale.")
      .def(
          "_priorities",
          [](const ReplayRing& r, CArray<int64_t> indices) {
            auto ii = indices.request();
            if (ii.ndim != 1) throw std::invalid_argument("indices must be 1-D");
            CArray<double> out(ii.shape[0]);
            double* o = out.mutable_data();
            {
              py::gil_scoped_release release;
              r.Priorities(ii.shape[0], static_cast<const int64_t*>(ii.ptr), o);
            }
            return out;
          },
          py::arg("indices").noconvert())
      .def(
          "_probabilities",
          [](const ReplayRing& r, CArray<int64_t> indices) {
            auto ii = indices.request();
            if (ii.ndim != 1) throw std::invalid_argument("indices must be 1-D");
            CArray<double> out(ii.shape[0]);
            double* o = out.mutable_data();
            {
              py::gil_scoped_release release;
              r.Probabilities(ii.shape[0], static_cast<const int64_t*>(ii.ptr), o);
            }
            return out;
          },
          py::arg("indices").noconvert())
      .def("num_valid", &ReplayRing::NumValid)
      .def("size", &ReplayRing::Size)
      .def("valid_indices",
           [](const ReplayRing& r) {
             std::vector<int64_t> v;
             {
               py::gil_scoped_release release;
               r.ValidIndices(&v);
             }
             CArray<int64_t> out(static_cast<py::ssize_t>(v.size()));
             std::copy(v.begin(), v.end(), out.mutable_data());
             return out;
           })
      .def(
          "locate",
          [](const ReplayRing& r, CArray<int64_t> indices) {
            auto ii = indices.request();
            if (ii.ndim != 1) throw std::invalid_argument("indices must be 1-D");
            CArray<int64_t> env(ii.shape[0]), step(ii.shape[0]);
            int64_t* e = env.mutable_data();
            int64_t* t = step.mutable_data();
            {
              py::gil_scoped_release release;
              r.Locate(ii.shape[0], static_cast<const int64_t*>(ii.ptr), e, t);
            }
            return py::make_tuple(env, step);
          },
          py::arg("indices").noconvert())
      .def("rebuild_index", &ReplayRing::RebuildIndex, py::call_guard<py::gil_scoped_release>())
      .def_property("rng_state", &ReplayRing::rng_state, &ReplayRing::set_rng_state)
      .def_property("max_priority", &ReplayRing::max_priority, &ReplayRing::set_max_priority)
      .def_property_readonly("prioritized",
                             [](const ReplayRing& r) { return r.config().prioritized; })
      .def_property_readonly("segment_capacity", &ReplayRing::segment_capacity)
      .def_property_readonly("capacity", &ReplayRing::capacity)
      .def_property_readonly("num_threads",
                             [](const ReplayRing& r) { return r.config().num_threads; })
      .def("_storage",
           [](py::object self) {
             // Zero-copy views of the raw arrays (for save and the load-time checks);
             // they keep the ring alive, and refuse writes: _restore is the one way in.
             py::dict d;
             for (const RawArray& a : RawArrays(self.cast<const ReplayRing&>())) {
               py::array view(a.dtype, a.shape, a.data, self);
               view.attr("setflags")(py::arg("write") = false);
               d[a.name] = view;
             }
             return d;
           })
      .def("_restore", &Restore, py::arg("name"), py::arg("array"),
           "Copies array over the raw array `name` (its exact dtype and shape, as _storage "
           "shows them; frames may hold the first slots of each env's segment only); call "
           "rebuild_index after the last one.");
}
