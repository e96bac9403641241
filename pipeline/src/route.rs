//! Which worker handles a vehicle: a stable hash, so each vehicle's messages stay in order on one
//! worker while different vehicles run in parallel.

use tripline_model::VehicleId;
use tripline_model::hash::fnv1a64;

/// The worker (0..`workers`) for `vehicle`; `workers` must be at least 1.
pub fn worker_for(vehicle: &VehicleId, workers: usize) -> usize {
    let workers = workers.max(1) as u64;
    usize::try_from(fnv1a64(vehicle.as_str().as_bytes()) % workers).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vehicle_always_goes_to_the_same_worker_and_vehicles_spread() {
        let vehicles: Vec<VehicleId> = (0..1000).map(|n| VehicleId::parse(&format!("car-{n}")).unwrap()).collect();
        let mut counts = [0usize; 4];
        for v in &vehicles {
            let w = worker_for(v, 4);
            assert_eq!(w, worker_for(v, 4));
            counts[w] += 1;
        }
        assert!(counts.iter().all(|c| (150..=350).contains(c)), "{counts:?}");
        assert_eq!(worker_for(&vehicles[0], 0), 0);
    }
}
